"""A small CNN for 28×28 / 32×32 image classification, split into ``stem`` and ``tail``.

The split exposes the first-stage feature map, where feature-statistic methods act (DSU,
Li et al., ICLR 2022; UAD-AT, Dong et al., arXiv:2411.02871). ``forward(x) = tail(stem(x))`` and the
input normalisation lives inside the model so attacks work in ``[0, 1]`` pixel space.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the model's first layer (attacks stay in pixel space).

    Args:
        mean: Per-channel means.
        std: Per-channel standard deviations (> 0).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean/std must have equal length and positive std, got {mean!r}, {std!r}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SmallCNN(nn.Module):
    """conv-BN-ReLU-pool ×2 + MLP head; ``stem`` = normalise + first conv block.

    Args:
        in_channels: Image channels (1 for Fashion-MNIST, 3 for CIFAR-10).
        num_classes: Number of classes.
        width: Channels of the first conv (the second has ``2*width``).
        hidden: Width of the hidden fully connected layer.
        image_size: Input side length (divisible by 4).
        mean: Normalisation means (default 0.5 per channel).
        std: Normalisation stds (default 0.5 per channel).
        channels_last: Keep weights and activations in NHWC memory order. Numerically the same network
            (up to float rounding in the convolution kernels), but on CPU PyTorch's NHWC max-pool and
            convolution kernels make a forward pass of this small model ~2-3x faster than NCHW, which is
            what attack-heavy evaluation (AutoAttack, Square) spends its time on.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, hidden: int = 128,
                 image_size: int = 28, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, channels_last: bool = True) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("num_classes", num_classes), ("width", width),
                        ("hidden", hidden)):
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if image_size % 4 != 0:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        mean = mean if mean is not None else [0.5] * in_channels
        std = std if std is not None else [0.5] * in_channels
        self.spec = {"arch": "small_cnn", "in_channels": in_channels, "num_classes": num_classes,
                     "width": width, "hidden": hidden, "image_size": image_size, "channels_last": channels_last}
        self.channels_last = bool(channels_last)
        self.stem = nn.Sequential(
            Normalize(mean, std),
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.tail = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(2 * width * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
        )
        if self.channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for images ``(B, C, H, W)`` in ``[0, 1]``."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.tail(self.stem(x))
