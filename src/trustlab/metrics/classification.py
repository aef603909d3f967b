"""Classification metrics: accuracy from logits, batched prediction, robust accuracy under an attack.

Pure functions first (:func:`accuracy`); the model-level helpers batch the data, run in eval mode and
never leave gradients behind. Robust accuracy follows the usual convention (Croce & Hein 2020): a point
counts as robust only if it is classified correctly *after* the attack, so robust accuracy is never
above natural accuracy for a deterministic model (points misclassified clean stay misclassified under
the zero perturbation that every attack here includes in its search).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows whose arg-max equals ``y`` (in ``[0, 1]``; 0.0 for an empty batch)."""
    if logits.shape[0] != y.shape[0]:
        raise ValueError(f"logits and labels disagree on the batch size: {logits.shape[0]} != {y.shape[0]}")
    if y.numel() == 0:
        return 0.0
    return float((logits.argmax(dim=1) == y).float().mean())


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, batched; returned on CPU."""
    was = model.training
    model.eval()
    dev = device if device is not None else next(model.parameters()).device
    try:
        out = [model(x[i:i + batch_size].to(dev)).cpu() for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.empty(0)


def correct_mask(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean mask of correctly classified points."""
    return predict_logits(model, x, batch_size, device).argmax(dim=1) == y.cpu()


def natural_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
                     device: torch.device | str | None = None) -> float:
    """Accuracy on clean inputs."""
    return float(correct_mask(model, x, y, batch_size, device).float().mean())


def robust_correct_mask(model: nn.Module, attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """Per-point robustness: correct on the clean input **and** on ``attack(x, y)``."""
    dev = device if device is not None else next(model.parameters()).device
    masks = []
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
        x_adv = attack(xb, yb)
        masks.append(correct_mask(model, xb, yb, batch_size, dev) & correct_mask(model, x_adv, yb, batch_size, dev))
    return torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool)


def robust_accuracy(model: nn.Module, attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
                    device: torch.device | str | None = None) -> float:
    """Fraction of points that are correct both clean and under ``attack`` (see module docstring)."""
    return float(robust_correct_mask(model, attack, x, y, batch_size, device).float().mean())
