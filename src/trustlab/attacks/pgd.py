"""Projected gradient descent (Madry et al., ICLR 2018, arXiv:1706.06083) and FGSM
(Goodfellow et al., ICLR 2015, arXiv:1412.6572), in L∞ and L2.

Update (L∞): ``x_{k+1} = Π_{B∞(x,ε) ∩ [lo,hi]}(x_k + α·sign ∇ℓ(f(x_k), y))``.
Update (L2):  ``x_{k+1} = Π_{B2(x,ε) ∩ [lo,hi]}(x_k + α·∇ℓ / ‖∇ℓ‖₂)``.

The loss ``ℓ`` is cross-entropy by default; any ``loss(logits, target) -> per-sample or scalar`` may be
passed (TRADES maximises ``KL(p(x) ‖ p(x'))`` with ``target = softmax(f(x))``). The loss is summed over
the batch so each sample's step does not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.attacks.base import Attack, ModelMode, Norm, lp_norm, project

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
RandomInit = Literal["uniform", "normal", "none"]


def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (the default PGD objective)."""
    return F.cross_entropy(logits, y, reduction="none")


def kl_to_target_loss(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Per-sample ``KL(target ‖ softmax(logits))`` (the TRADES inner objective)."""
    return F.kl_div(F.log_softmax(logits, dim=1), target_probs, reduction="none").sum(dim=1)


def random_start(x: torch.Tensor, eps: float, norm: Norm, kind: RandomInit,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Initial perturbation: uniform in the ε-ball, ``0.001·N(0, I)`` (TRADES/MART), or zero.

    Args:
        x: Clean batch.
        eps: Budget.
        norm: ``"linf"`` or ``"l2"``.
        kind: ``"uniform"``, ``"normal"`` or ``"none"``.
        generator: Optional torch generator for reproducibility.
    """
    if kind == "none":
        return torch.zeros_like(x)
    if kind == "normal":
        return 0.001 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * eps
    d = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    d = d / lp_norm(d, "l2").clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
    r = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
    r = r ** (1.0 / x[0].numel())
    return d * (eps * r).view(-1, *([1] * (x.dim() - 1)))


def pgd_step(x_adv: torch.Tensor, grad: torch.Tensor, alpha: float, norm: Norm) -> torch.Tensor:
    """One ascent step of size ``alpha`` (signed gradient for L∞, normalised gradient for L2)."""
    if norm == "linf":
        return x_adv + alpha * grad.sign()
    g = lp_norm(grad, "l2").clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
    return x_adv + alpha * grad / g


class PGD(Attack):
    """PGD with a random start (Madry et al. 2018); FGSM is :class:`FGSM` (one step, no start).

    Args:
        model: Classifier returning logits.
        eps: Budget (e.g. 0.1 L∞ on Fashion-MNIST, 8/255 on CIFAR-10).
        alpha: Step size (> 0). Default ``eps/4``.
        steps: Number of iterations (>= 1).
        norm: ``"linf"`` or ``"l2"``.
        random_init: ``"uniform"`` (Madry), ``"normal"`` (TRADES/MART: ``0.001·N(0, I)``) or ``"none"``.
        loss: ``loss(logits, target)``; default cross-entropy with class indices.
        clip: Valid input range.
        model_mode: See :class:`~trustlab.attacks.base.Attack`.
        generator: Torch generator for the random start (explicit randomness).
    """

    def __init__(self, model: nn.Module, eps: float, alpha: float | None = None, steps: int = 10,
                 norm: Norm = "linf", random_init: RandomInit = "uniform", loss: LossFn | None = None,
                 clip: tuple[float, float] | None = (0.0, 1.0), model_mode: ModelMode = "eval",
                 generator: torch.Generator | None = None) -> None:
        super().__init__(model, eps, norm, clip, model_mode)
        alpha = eps / 4 if alpha is None else alpha
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        if not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        if random_init not in ("uniform", "normal", "none"):
            raise ValueError(f"random_init must be 'uniform', 'normal' or 'none', got {random_init!r}")
        self.alpha = float(alpha)
        self.steps = steps
        self.random_init: RandomInit = random_init
        self.loss: LossFn = loss or cross_entropy_loss
        self.generator = generator

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Run ``steps`` projected ascent steps from the random start."""
        x_adv = project(x + random_start(x, self.eps, self.norm, self.random_init, self.generator),
                        x, self.eps, self.norm, self.clip)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            loss = self.loss(self.model(x_adv), y).sum()
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = project(pgd_step(x_adv.detach(), grad, self.alpha, self.norm), x, self.eps, self.norm, self.clip)
        return x_adv

    def __repr__(self) -> str:
        return (f"PGD(eps={self.eps:g}, alpha={self.alpha:g}, steps={self.steps}, norm={self.norm}, "
                f"random_init={self.random_init})")


class FGSM(PGD):
    """Fast gradient sign method: one step of size ``eps`` from ``x`` (L2: one normalised-gradient step).

    Args:
        model: Classifier returning logits.
        eps: Budget.
        norm: ``"linf"`` or ``"l2"``.
        loss: ``loss(logits, target)``; default cross-entropy.
        clip: Valid input range.
        model_mode: See :class:`~trustlab.attacks.base.Attack`.
    """

    def __init__(self, model: nn.Module, eps: float, norm: Norm = "linf", loss: LossFn | None = None,
                 clip: tuple[float, float] | None = (0.0, 1.0), model_mode: ModelMode = "eval") -> None:
        super().__init__(model, eps, alpha=eps, steps=1, norm=norm, random_init="none", loss=loss,
                         clip=clip, model_mode=model_mode)

    def __repr__(self) -> str:
        return f"FGSM(eps={self.eps:g}, norm={self.norm})"
