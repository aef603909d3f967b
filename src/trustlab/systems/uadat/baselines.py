"""The baselines UAD-AT is compared against: standard training, PGD-AT, TRADES and MART.

* PGD-AT: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018
  (arXiv:1706.06083): ``min_θ E max_{‖δ‖∞≤ε} CE(f(x+δ), y)``, CE-PGD from a uniform random start.
* TRADES: Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019
  (arXiv:1901.08573): ``CE(f(x), y) + β·(1/B)·Σ KL(p(x) ‖ p(x'))`` with ``x'`` maximising that KL from
  ``x + 0.001·N(0, I)``.
* MART: Wang et al., "Improving Adversarial Robustness Requires Revisiting Misclassified Examples",
  ICLR 2020: ``BCE(p(x'), y) + β·(1/B)·Σ KL(p(x) ‖ p(x'))·(1 − p_y(x))`` with
  ``BCE = −log p_y(x') − log(1 − max_{k≠y} p_k(x'))`` and ``x'`` from CE-PGD.

Every method crafts its training adversaries with the model in **eval** mode (TRADES' convention, also
ART's) and computes the outer loss in train mode. Losses are pure functions; the classes hold the
hyper-parameters (validated) and call them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.attacks.pgd import PGD, kl_to_target_loss


def trades_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """TRADES outer loss ``CE(f(x), y) + β·mean_i KL(p(x_i) ‖ p(x'_i))``."""
    ce = F.cross_entropy(logits_clean, y)
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
    return ce + beta * kl


def mart_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """MART outer loss (boosted CE on adversaries + misclassification-weighted KL), as in the reference code."""
    p_adv = F.softmax(logits_adv, dim=1)
    sorted_idx = p_adv.argsort(dim=1)
    # the most likely wrong class: the top class unless it is y, then the runner-up
    new_y = torch.where(sorted_idx[:, -1] == y, sorted_idx[:, -2], sorted_idx[:, -1])
    bce = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), new_y)
    p_clean = F.softmax(logits_clean, dim=1)
    true_p = p_clean.gather(1, y.unsqueeze(1)).squeeze(1)
    kl = (F.kl_div(torch.log(p_adv + 1e-12), p_clean, reduction="none").sum(dim=1) * (1.0000001 - true_p)).mean()
    return bce + beta * kl


class TrainingMethod(ABC):
    """One training objective: ``loss(model, x, y)`` returns the scalar to minimise for a batch.

    Args:
        eps: L∞ budget of the training adversaries.
        steps: PGD iterations when crafting them.
        alpha: PGD step size (default ``eps/4``).
    """

    name: str = "base"

    def __init__(self, eps: float = 0.1, steps: int = 10, alpha: float | None = None) -> None:
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        if not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        alpha = eps / 4 if alpha is None else alpha
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        self.eps = float(eps)
        self.steps = steps
        self.alpha = float(alpha)

    @abstractmethod
    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """The batch loss (the model is in train mode when this is called)."""

    def _ce_pgd(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, init: str,
                generator: torch.Generator | None) -> torch.Tensor:
        return PGD(model, self.eps, self.alpha, self.steps, random_init=init,  # type: ignore[arg-type]
                   generator=generator)(x, y)

    def _kl_pgd(self, model: nn.Module, x: torch.Tensor, generator: torch.Generator | None,
                init: str = "normal") -> torch.Tensor:
        was = model.training
        model.eval()
        with torch.no_grad():
            target = F.softmax(model(x), dim=1)
        model.train(was)
        return PGD(model, self.eps, self.alpha, self.steps, random_init=init, loss=kl_to_target_loss,  # type: ignore[arg-type]
                   generator=generator)(x, target)


class StandardTraining(TrainingMethod):
    """Plain empirical risk minimisation: ``CE(f(x), y)`` (no adversaries)."""

    name = "standard"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        return F.cross_entropy(model(x), y)


class PGDAT(TrainingMethod):
    """Madry et al. (2018) PGD adversarial training: ``CE(f(x_adv), y)``."""

    name = "pgd_at"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        x_adv = self._ce_pgd(model, x, y, "uniform", generator)
        return F.cross_entropy(model(x_adv), y)


class _BetaMethod(TrainingMethod):
    """A method with a trade-off weight ``beta`` on its KL term (TRADES, MART)."""

    def __init__(self, eps: float = 0.1, steps: int = 10, alpha: float | None = None, beta: float = 6.0) -> None:
        super().__init__(eps, steps, alpha)
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta!r}")
        self.beta = float(beta)


class TRADES(_BetaMethod):
    """Zhang et al. (2019) TRADES with trade-off ``beta`` (6 in the paper's CIFAR-10 setting)."""

    name = "trades"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        x_adv = self._kl_pgd(model, x, generator)
        return trades_loss(model(x), model(x_adv), y, self.beta)


class MART(_BetaMethod):
    """Wang et al. (2020) MART with ``beta`` (6 in the reference code)."""

    name = "mart"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        x_adv = self._ce_pgd(model, x, y, "normal", generator)
        return mart_loss(model(x), model(x_adv), y, self.beta)
