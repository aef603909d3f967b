"""A small CNN for single-channel SAR chips (conv-pool-conv-pool-fc-fc).

Example:
    >>> import torch
    >>> SARCNN(num_classes=10, image_size=32)(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SARCNN"]


class SARCNN(nn.Module):
    """Two 3x3 conv blocks (ReLU, 2x2 max-pool) and a two-layer classifier head.

    Args:
        in_channels: Input channels (1 for amplitude chips).
        num_classes: Output classes.
        image_size: Input side (divisible by 4).
        width: Channels of the first conv (the second has ``2 * width``).
        hidden: Width of the hidden fully connected layer.
        input_mean: Subtracted from inputs (fixed, not learned; SAR amplitudes in [0, 1] are skewed low).
        input_std: Inputs are divided by it after centring.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 32, width: int = 8,
                 hidden: int = 64, input_mean: float = 0.25, input_std: float = 0.15) -> None:
        super().__init__()
        if input_std <= 0:
            raise ValueError(f"input_std must be > 0, got {input_std}")
        self.input_mean = float(input_mean)
        self.input_std = float(input_std)
        if image_size < 8 or image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 and >= 8, got {image_size}")
        if min(in_channels, num_classes, width, hidden) < 1 or num_classes < 2:
            raise ValueError("in_channels, width, hidden must be >= 1 and num_classes >= 2")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(2 * width * (image_size // 4) ** 2, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(N, hidden)``."""
        x = (x - self.input_mean) / self.input_std
        return torch.relu(self.fc1(self.features(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)``."""
        return self.fc2(self.embed(x))
