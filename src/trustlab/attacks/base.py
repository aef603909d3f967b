"""The attack base: one verb (``attack(x, y) -> x_adv``); the base does the plumbing.

``Attack.__call__`` validates the inputs, puts the model in the requested mode (``eval`` by default, as
TRADES and ART craft adversaries), switches gradients on (attacks may be called under ``torch.no_grad``),
runs the subclass's :meth:`Attack.forward`, restores the model's mode, and returns a detached tensor
checked to lie in the threat model (the ε-ball of ``norm`` intersected with ``clip``).
Subclasses implement only :meth:`Attack.forward`. (Pattern: torchattacks ``Attack.__call__``.)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Literal

import torch
from torch import nn

Norm = Literal["linf", "l2"]
ModelMode = Literal["eval", "train", "keep"]
NORMS: tuple[str, ...] = ("linf", "l2")


def lp_norm(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-sample norm of a batch of perturbations.

    Args:
        delta: Perturbations, shape ``(B, ...)``.
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        Shape ``(B,)``.
    """
    flat = delta.reshape(delta.shape[0], -1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    return flat.norm(p=2, dim=1)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm,
            clip: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    """Project ``x_adv`` onto the ε-ball around ``x`` (in ``norm``), then clip to the valid range.

    Clipping after an L∞ projection stays inside the ball (both are box constraints). For L2 a
    clipped point is still inside the ball because clipping towards ``x``'s valid box never moves a
    coordinate away from ``x`` when ``x`` is itself in the box.
    """
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = lp_norm(delta, "l2").clamp_min(1e-12)
        factor = torch.minimum(torch.ones_like(n), eps / n)
        delta = delta * factor.view(-1, *([1] * (delta.dim() - 1)))
    out = x + delta
    if clip is not None:
        out = out.clamp(clip[0], clip[1])
    return out


class Attack(ABC):
    """Base class of evasion attacks on a classifier that returns logits.

    Args:
        model: The classifier (``x -> logits``); inputs live in ``clip`` (normalisation belongs inside it).
        eps: Perturbation budget (> 0).
        norm: ``"linf"`` or ``"l2"``.
        clip: Valid input range, or ``None`` for unbounded inputs.
        model_mode: Mode the model is put in while crafting: ``"eval"`` (default, BN running stats,
            dropout off), ``"train"``, or ``"keep"`` (leave it as it is).

    Raises:
        ValueError: for a non-positive ``eps``, an unknown ``norm``/``model_mode`` or an empty ``clip``.
    """

    def __init__(self, model: nn.Module, eps: float, norm: Norm = "linf",
                 clip: tuple[float, float] | None = (0.0, 1.0), model_mode: ModelMode = "eval") -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be a positive finite number, got {eps!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if clip is not None and not clip[0] < clip[1]:
            raise ValueError(f"clip must be (low, high) with low < high, got {clip!r}")
        if model_mode not in ("eval", "train", "keep"):
            raise ValueError(f"model_mode must be 'eval', 'train' or 'keep', got {model_mode!r}")
        self.model = model
        self.eps = float(eps)
        self.norm: Norm = norm
        self.clip = clip
        self.model_mode: ModelMode = model_mode

    @abstractmethod
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Craft adversarial examples (gradients are enabled; the model is in the requested mode).

        Args:
            x: Clean inputs ``(B, ...)`` inside ``clip``.
            y: Targets of the attack loss (class indices, or whatever the subclass's loss expects).

        Returns:
            Adversarial inputs, same shape as ``x``.
        """

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Run the attack with the plumbing described in the module docstring; returns detached ``x_adv``."""
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y disagree on the batch size: {x.shape[0]} != {y.shape[0]}")
        if self.clip is not None and (x.min() < self.clip[0] - 1e-6 or x.max() > self.clip[1] + 1e-6):
            raise ValueError(f"inputs must lie in {self.clip}; normalise inside the model, not before the attack")
        was_training = self.model.training
        if self.model_mode == "eval":
            self.model.eval()
        elif self.model_mode == "train":
            self.model.train()
        try:
            with torch.enable_grad():
                x_adv = self.forward(x.detach(), y.detach())
        finally:
            self.model.train(was_training)
        x_adv = project(x_adv.detach(), x.detach(), self.eps, self.norm, self.clip)
        return x_adv

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps:g}, norm={self.norm}, clip={self.clip})"
