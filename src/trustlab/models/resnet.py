"""A small pre-activation ResNet (He et al., ECCV 2016, arXiv:1603.05027), split into ``stem`` and ``tail``.

:func:`preact_resnet18` (``blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512)``) is PreAct ResNet-18, the
usual adversarial-training backbone on CIFAR-10. :func:`preact_resnet8` is the narrow 3-stage network
with one block per stage (1 + 3·2 + 1 = 8 weight layers) that trains on a CPU; it is *not* a ResNet-18. ``stem`` = normalisation, first conv and the first stage (the feature map that
feature-statistic methods perturb); ``tail`` = the remaining stages, pooling and the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.models.small_cnn import Normalize


class PreActBlock(nn.Module):
    """BN-ReLU-conv ×2 with an identity (or 1×1 conv) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        sc = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + sc


class _Head(nn.Module):
    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class PreActResNet(nn.Module):
    """A pre-activation ResNet with configurable depth and width.

    Args:
        in_channels: Image channels.
        num_classes: Number of classes.
        blocks: Blocks per stage (stage ``i > 0`` halves the resolution).
        widths: Channels per stage (same length as ``blocks``).
        mean: Normalisation means (default 0.5 per channel).
        std: Normalisation stds (default 0.5 per channel).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, blocks: Sequence[int] = (1, 1, 1),
                 widths: Sequence[int] = (16, 32, 64), mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        if len(blocks) != len(widths) or not blocks:
            raise ValueError(f"blocks and widths must be non-empty and of equal length, got {blocks}, {widths}")
        if any(b < 1 for b in blocks) or any(w < 1 for w in widths):
            raise ValueError("every stage needs >= 1 block and >= 1 channel")
        if num_classes < 2 or in_channels < 1:
            raise ValueError(f"need num_classes >= 2 and in_channels >= 1, got {num_classes}, {in_channels}")
        mean = mean if mean is not None else [0.5] * in_channels
        std = std if std is not None else [0.5] * in_channels
        self.spec = {"arch": "preact_resnet", "in_channels": in_channels, "num_classes": num_classes,
                     "blocks": list(blocks), "widths": list(widths)}
        stages: list[nn.Module] = []
        c = widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            layers = [PreActBlock(c, w, stride=1 if i == 0 else 2)]
            layers += [PreActBlock(w, w) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            c = w
        self.stem = nn.Sequential(Normalize(mean, std),
                                  nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), stages[0])
        self.tail = nn.Sequential(*stages[1:], _Head(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for images ``(B, C, H, W)`` in ``[0, 1]``."""
        return self.tail(self.stem(x))


def preact_resnet18(in_channels: int = 3, num_classes: int = 10) -> PreActResNet:
    """PreAct ResNet-18 (He et al. 2016): 4 stages of 2 blocks, widths 64/128/256/512 (11.2 M parameters)."""
    return PreActResNet(in_channels, num_classes, blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512))


def preact_resnet8(in_channels: int = 3, num_classes: int = 10, width: int = 16) -> PreActResNet:
    """A narrow PreAct ResNet-8: 3 stages of 1 block, widths ``width``/``2·width``/``4·width``."""
    return PreActResNet(in_channels, num_classes, blocks=(1, 1, 1), widths=(width, 2 * width, 4 * width))
