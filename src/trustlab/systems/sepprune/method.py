"""SepPrune: differentiable channel-mask learning, budget projection and physical pruning.

Ji et al., *SepPrune: Structured Pruning for Efficient Deep Speech Separation*, AAAI 2026
(arXiv:2505.12079). Three stages:

1. structural analysis (MACs per module; :mod:`.analysis`), which picks the prunable groups of the
   separation module;
2. **mask learning** with the backbone frozen: one learnable score ``alpha_c`` per channel, a
   Gumbel-perturbed sigmoid ``pi_c = sigmoid((alpha_c + g_c) / tau)``, a hard mask
   ``m_c = 1[pi_c >= eps]`` in the forward pass and a straight-through backward pass whose gradient is
   clipped to ``[-1, 1]``; the task loss (PIT negative SI-SNR) is minimized (optionally plus output
   distillation from the dense model, off by default). The scores start from U(0, 1) as in the
   released code or, as our experiment does, from the standardized L1 filter norms (``init="l1"``)
   with a lower learning rate so that learning refines channel importance (see the README);
3. physical pruning of the channels with ``m = 0`` (every dependent tensor sliced, weights inherited)
   followed by fine-tuning (:mod:`.training`).

Two ways to turn scores into a mask:

- ``target_macs=None`` (*faithful*): the paper's fixed threshold ``eps``; the amount pruned is whatever
  the learning lands on (the research note measured ~20 % of channels removed at any ``eps``).
- ``target_macs=r`` (*budget mode*, our default): each training step uses the per-step threshold that
  keeps the highest-scoring channels whose MACs fit ``r`` x dense (a global top-k by score per MAC
  cost), so the forward pass always runs the architecture that will be deployed; the final mask is
  the same projection of the noise-free scores ``alpha`` and meets the budget exactly.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from trustlab.metrics.audio import pit_si_snr_loss
from trustlab.systems.sepprune.analysis import CostModel
from trustlab.utils.logging import get_logger
from trustlab.utils.progress import progress

log = get_logger(__name__)


class ClippedSTE(torch.autograd.Function):
    """``1[x >= 0]`` forward; identity gradient clipped to [-1, 1] backward (the code's ``LBSign``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return grad.clamp(-1.0, 1.0)


class ForcedSTE(torch.autograd.Function):
    """Forward a given 0/1 mask; pass the clipped gradient to the scores (budget-mode STE)."""

    @staticmethod
    def forward(ctx, pi: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return keep.to(pi.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return grad.clamp(-1.0, 1.0), None


def hard_threshold(pi: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Straight-through hard mask ``1[pi >= eps]``."""
    return ClippedSTE.apply(pi - eps)


def gumbel_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log U)``."""
    u = torch.rand(shape, generator=generator).clamp(1e-10, 1 - 1e-10)
    return -torch.log(-torch.log(u))


def budget_keep(scores: dict[str, torch.Tensor], cost: CostModel, target: float,
                min_keep: int = 1) -> dict[str, torch.Tensor]:
    """Boolean keep-masks that maximize kept score under ``MACs <= target * dense`` (greedy, exact budget).

    Channels are taken in decreasing order of score (ties: lower MAC cost first) while they fit; the
    ``min_keep`` best channels of each group are always kept so no layer disappears.

    Args:
        scores: Per group, one score per channel (higher = more important).
        cost: The model's linear MAC cost.
        target: MACs budget as a fraction of the dense model, in (0, 1].

    Raises:
        ValueError: the budget cannot be met even with ``min_keep`` channels per group.
    """
    if hasattr(cost, "project"):  # an exact (bilinear) layer cost of a torch-pruning-grouped model
        return cost.project(scores, target, min_keep)
    if not 0 < target <= 1:
        raise ValueError(f"target must be in (0, 1], got {target}")
    keep = {g: torch.zeros_like(s, dtype=torch.bool) for g, s in scores.items()}
    budget = target * cost.dense - cost.base
    used = 0.0
    for g, s in scores.items():
        top = torch.argsort(s, descending=True, stable=True)[:min_keep]
        keep[g][top] = True
        used += cost.cost[g] * len(top)
    if used > budget + 1e-6:
        raise ValueError(f"a MACs ratio of {target} is below the minimum ({(cost.base + used) / cost.dense:.3f}) "
                         f"reachable with {min_keep} channel(s) per group")
    flat = [(float(s[i]), -cost.cost[g], g, i) for g, s in scores.items() for i in range(len(s)) if not keep[g][i]]
    flat.sort(reverse=True)
    for _, neg_c, g, i in flat:
        if used - neg_c <= budget + 1e-6:
            keep[g][i] = True
            used -= neg_c
    return keep


def keep_counts(keep: dict[str, torch.Tensor]) -> dict[str, int]:
    """Number of kept channels per group."""
    return {g: int(k.sum()) for g, k in keep.items()}


def keep_indices(keep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Kept channel indices per group (sorted)."""
    return {g: torch.nonzero(k, as_tuple=False).flatten() for g, k in keep.items()}


@dataclass
class SepPrune:
    """Learn channel masks on a frozen separator, then prune it physically.

    Args:
        eps: Threshold on ``sigmoid(alpha + g)`` (paper/code: 0.7). Used as is when ``target_macs`` is
            None; in budget mode it only sets the initial scale of ``alpha`` (see ``init``).
        target_macs: MACs budget as a fraction of the dense model, or None for the faithful fixed-eps mode.
        steps: Mask-learning iterations (code: 500 batches of one epoch).
        lr: Adam learning rate on the scores (code: 0.1).
        tau: Sigmoid temperature (code: 1).
        grad_clip: Gradient-norm clip (Lightning ``gradient_clip_val=5``).
        noise: Add Gumbel noise (False gives a deterministic relaxation, for ablations).
        init: ``uniform`` draws alpha ~ U(0, 1) as the released code does; ``l1`` starts from the
            standardized L1 filter norms (channel importance) of the dense model, times ``init_scale``.
        init_scale: Spread of the ``l1`` initialization in logit units (the Gumbel noise has std 1.28).
        distill: Weight of an output-distillation term, PIT negative SI-SNR between the masked model's
            estimates and the frozen dense model's (0 = the paper's task loss only).
        anneal: Decay the Gumbel noise scale linearly from 1 to 0 over the mask steps (with a hard
            forward mask the temperature ``tau`` does not change which channels a budget keeps, so the
            noise scale is what is annealed); the last steps then train the deterministic mask.
        min_keep: Channels always kept per group.
        seed: Seed of the score initialization and the Gumbel noise.
        final: ``deterministic`` (``1[sigmoid(alpha) >= eps]`` or its budget projection; ours) or
            ``last_sample``: the mask of the last stochastic forward pass, which the released code saves.
    """

    eps: float = 0.7
    target_macs: float | None = 0.5
    steps: int = 500
    lr: float = 0.1
    tau: float = 1.0
    grad_clip: float = 5.0
    noise: bool = True
    init: str = "uniform"
    init_scale: float = 1.0
    distill: float = 0.0
    anneal: bool = False
    min_keep: int = 1
    seed: int = 0
    final: str = "deterministic"
    alpha_: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    history_: list[dict[str, float]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.eps < 1:
            raise ValueError(f"eps must be in (0, 1), got {self.eps}")
        if self.target_macs is not None and not 0 < self.target_macs <= 1:
            raise ValueError(f"target_macs must be in (0, 1] or None, got {self.target_macs}")
        if self.steps < 1 or self.lr <= 0 or self.tau <= 0 or self.grad_clip <= 0 or self.min_keep < 1:
            raise ValueError("steps, lr, tau, grad_clip and min_keep must be positive")
        if self.init not in ("uniform", "l1"):
            raise ValueError(f"init must be 'uniform' or 'l1', got {self.init!r}")
        if self.distill < 0:
            raise ValueError(f"distill must be >= 0, got {self.distill}")
        if self.final not in ("deterministic", "last_sample"):
            raise ValueError(f"final must be 'deterministic' or 'last_sample', got {self.final!r}")
        self.last_mask_: dict[str, torch.Tensor] = {}

    # -- masks -----------------------------------------------------------------------------------
    def _masks(self, alpha: dict[str, torch.Tensor], cost: CostModel,
               gen: torch.Generator | None, scale: float = 1.0) -> dict[str, torch.Tensor]:
        pis = {}
        for g, a in alpha.items():
            z = a + scale * gumbel_noise(a.shape, gen).to(a.device) if (self.noise and gen is not None) else a
            pis[g] = torch.sigmoid(z / self.tau)
        if self.target_macs is None:
            return {g: hard_threshold(p, self.eps) for g, p in pis.items()}
        keep = budget_keep({g: p.detach() for g, p in pis.items()}, cost, self.target_macs, self.min_keep)
        return {g: ForcedSTE.apply(p, keep[g]) for g, p in pis.items()}

    def fit(self, model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], cost: CostModel,
            device: torch.device | str = "cpu") -> SepPrune:
        """Learn ``alpha_`` on a frozen ``model`` from an iterator of ``(mix [B, T], sources [B, S, T])``.

        The backbone's parameters are never updated (their ``requires_grad`` is restored afterwards).
        """
        gen = torch.Generator().manual_seed(self.seed)
        groups = model.mask_groups()  # type: ignore[operator]
        if self.init == "uniform":
            alpha = {g: torch.rand(n, generator=gen) for g, n in groups.items()}
        else:
            l1 = model.l1_scores()  # type: ignore[operator]
            alpha = {g: self.init_scale * (s - s.mean()) / (s.std() + 1e-8) for g, s in l1.items()}
        alpha = {g: a.to(device).requires_grad_(True) for g, a in alpha.items()}
        flags = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        was_training = model.training
        model.eval()  # no dropout/batch-norm in our models; eval keeps the backbone's behaviour fixed
        opt = torch.optim.Adam(alpha.values(), lr=self.lr, weight_decay=0.0)
        self.history_ = []
        try:
            for step, (mix, src) in enumerate(progress(itertools.islice(batches, self.steps), total=self.steps,
                                                       desc="sepprune masks")):
                scale = 1.0 - step / self.steps if self.anneal else 1.0
                masks = self._masks(alpha, cost, gen, scale)
                mix = mix.to(device)
                est = model(mix, masks=masks)
                loss = pit_si_snr_loss(est, src.to(device))
                if self.distill > 0:
                    with torch.no_grad():
                        teacher = model(mix)
                    loss = loss + self.distill * pit_si_snr_loss(est, teacher)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(alpha.values()), self.grad_clip)
                opt.step()
                kept = {g: float(m.detach().sum()) for g, m in masks.items()}
                self.last_mask_ = {g: m.detach().cpu() > 0.5 for g, m in masks.items()}
                self.history_.append({"step": step, "loss": loss.item(), "macs_ratio": cost.ratio(kept)})
        finally:
            for p, f in zip(model.parameters(), flags, strict=True):
                p.requires_grad_(f)
            model.train(was_training)
        self.alpha_ = {g: a.detach().cpu() for g, a in alpha.items()}
        log.info("sepprune: %d mask steps, last loss %.2f", len(self.history_),
                 self.history_[-1]["loss"] if self.history_ else float("nan"))
        return self

    def keep(self, cost: CostModel) -> dict[str, torch.Tensor]:
        """The final deterministic keep-mask (no noise): ``1[sigmoid(alpha) >= eps]`` or the budget projection."""
        if not self.alpha_:
            raise RuntimeError("call fit() first")
        pis = {g: torch.sigmoid(a / self.tau) for g, a in self.alpha_.items()}
        if self.final == "last_sample" and self.last_mask_:
            keep = {g: m.clone() for g, m in self.last_mask_.items()}
            for g, p in pis.items():  # never remove a whole layer
                if int(keep[g].sum()) < self.min_keep:
                    keep[g][torch.argsort(p, descending=True)[: self.min_keep]] = True
            return keep
        if self.target_macs is None:
            keep = {g: p >= self.eps for g, p in pis.items()}
            for g, p in pis.items():  # never remove a whole layer
                if int(keep[g].sum()) < self.min_keep:
                    keep[g][torch.argsort(p, descending=True)[: self.min_keep]] = True
            return keep
        return budget_keep(pis, cost, self.target_macs, self.min_keep)

    def prune(self, model: nn.Module, cost: CostModel) -> nn.Module:
        """The physically pruned copy of ``model`` under the learned mask."""
        return model.prune(keep_indices(self.keep(cost)))  # type: ignore[operator]
