"""Baselines of FVL-FP: zero-shot CLIP, PromptFL (FedAvg of CoOp prompts), FairFed, q-FFL.

* **zero_shot**: hand-written prompt ``"a photo of a {class} person"``, no tuning.
* **promptfl**: CoOp unified context averaged with FedAvg (Guo et al., "PromptFL", IEEE TMC 2023); uses
  the shared core's :class:`trustlab.federated.FedAvg`.
* **fairfed**: FairFed (Ezzeldin et al., AAAI 2023) fairness-aware reweighting with plain local CoOp:
  ``Delta_k = |F_global - F_k|`` (equalized-odds difference of the *global* prompt, ``F_global`` from
  securely summed (group, label, prediction) counts), ``w_k <- w_k - beta (Delta_k - mean Delta)``,
  clipped at 0 and normalised; initial weights ``n_k / n``.
* **qffl**: q-FedAvg (Li et al., "Fair Resource Allocation in Federated Learning", ICLR 2020) over the
  prompt tensors: ``Delta w_k = L (w - w_k)``, ``h_k = q F_k^(q-1) ||Delta w_k||^2 + L F_k^q``,
  ``w <- w - sum F_k^q Delta w_k / sum h_k`` with ``L = 1 / lr`` (as Flower's ``QFedAvg``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trustlab.federated import FitReply, NDArrays, UpdateStrategy, aggregate
from trustlab.metrics.fairness import fairness_report
from trustlab.models.tiny_clip import VLBackbone
from trustlab.systems.fvlfp.method import counts_from_metrics

__all__ = ["FairFedStrategy", "QFFLStrategy", "eo_from_counts", "fairfed_weights", "qffl_aggregate", "zero_shot_eval"]


def eo_from_counts(counts: np.ndarray) -> float:
    """Equalized-odds difference (one-vs-rest max) from ``counts[group, true, pred]``.

    Equals :func:`trustlab.metrics.fairness.eo_diff` on the samples the counts summarise.
    """
    c = np.asarray(counts, dtype=np.float64)
    n_classes = c.shape[1]
    classes = [1] if n_classes == 2 else list(range(n_classes))
    worst = 0.0
    for k in classes:
        for cond in (True, False):  # TPR (true == k), FPR (true != k)
            rates = []
            for g in range(c.shape[0]):
                rows = c[g, k] if cond else np.delete(c[g], k, axis=0).sum(0)
                if rows.sum() > 0:
                    rates.append(rows[k] / rows.sum())
            if len(rates) >= 2:
                worst = max(worst, max(rates) - min(rates))
    return float(worst)


def fairfed_weights(prev: np.ndarray, local_gaps: np.ndarray, global_gap: float, beta: float) -> np.ndarray:
    """One FairFed weight update: ``w - beta (Delta - mean Delta)``, clipped at 0, normalised.

    Example:
        >>> fairfed_weights(np.array([.5, .5]), np.array([.1, .3]), .1, 1.0).round(3).tolist()
        [0.6, 0.4]
    """
    delta = np.abs(global_gap - np.asarray(local_gaps, dtype=np.float64))
    w = np.clip(np.asarray(prev, dtype=np.float64) - beta * (delta - delta.mean()), 0.0, None)
    if w.sum() <= 0:
        w = np.ones_like(w)
    return w / w.sum()


def qffl_aggregate(updates: np.ndarray, losses: np.ndarray, q: float, lipschitz: float) -> aggregate.Aggregate:
    """q-FedAvg step over client updates ``u_k = w_k - w`` (so ``Delta w_k = -L u_k``).

    Returns:
        The aggregated update ``sum F_k^q L u_k / sum h_k`` with per-client weights ``F_k^q L / sum h``.
    """
    u = np.asarray(updates, dtype=np.float64)
    f = np.maximum(np.asarray(losses, dtype=np.float64), 1e-10)
    if q < 0 or lipschitz <= 0:
        raise ValueError(f"q must be >= 0 and lipschitz > 0, got {q}, {lipschitz}")
    dw = -lipschitz * u
    h = q * f ** (q - 1) * (dw**2).sum(1) + lipschitz * f**q if q > 0 else np.full(len(f), lipschitz)
    w = (f**q * lipschitz) / h.sum()
    return aggregate.Aggregate(update=w @ u, weights=w, accepted=np.ones(len(f), dtype=bool))


class FairFedStrategy(UpdateStrategy):
    """FairFed server (see module docstring); asks clients for the global prompt's local counts.

    Args:
        beta: Fairness budget (step size of the weight update).
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = beta
        self.weights_: dict[Any, float] = {}
        self._metrics: dict[Any, dict[str, Any]] = {}

    def configure_train(self, server_round, parameters, client_ids):  # noqa: D102
        return {cid: {"server_round": server_round, "report_before": True} for cid in client_ids}

    def aggregate_train(self, server_round: int, parameters: NDArrays, replies: Sequence[FitReply]) -> tuple[NDArrays, dict[str, Any]]:
        """Keep the replies' fairness statistics, then aggregate."""
        self._metrics = {r.client_id: r.metrics for r in replies}
        return super().aggregate_train(server_round, parameters, replies)

    def aggregate_updates(self, server_round, updates, num_examples, client_ids, parameters):  # noqa: D102
        counts = [counts_from_metrics(self._metrics[c]) for c in client_ids]
        global_gap = eo_from_counts(np.sum(counts, axis=0))  # secure sum of counts
        local = np.array([eo_from_counts(c) for c in counts])
        n = np.asarray(num_examples, dtype=np.float64)
        prev = np.array([self.weights_.get(c, nk / n.sum()) for c, nk in zip(client_ids, n, strict=True)])
        w = fairfed_weights(prev / prev.sum(), local, global_gap, self.beta)
        self.weights_.update(dict(zip(client_ids, w, strict=True)))
        return aggregate.Aggregate(update=w @ updates, weights=w, accepted=w > 0)


class QFFLStrategy(UpdateStrategy):
    """q-FedAvg server over prompt tensors.

    Args:
        q: Fairness exponent (0 = FedAvg-like).
        lr: Clients' learning rate (``L = 1 / lr``).
    """

    def __init__(self, q: float = 1.0, lr: float = 0.1) -> None:
        super().__init__()
        if q < 0 or lr <= 0:
            raise ValueError(f"q must be >= 0 and lr > 0, got {q}, {lr}")
        self.q, self.lr = q, lr
        self._losses: dict[Any, float] = {}

    def configure_train(self, server_round, parameters, client_ids):  # noqa: D102
        return {cid: {"server_round": server_round, "report_loss": True} for cid in client_ids}

    def aggregate_train(self, server_round: int, parameters: NDArrays, replies: Sequence[FitReply]) -> tuple[NDArrays, dict[str, Any]]:
        """Keep each client's loss ``F_k`` of the global prompt, then aggregate."""
        self._losses = {r.client_id: float(r.metrics["train_loss_before"]) for r in replies}
        return super().aggregate_train(server_round, parameters, replies)

    def aggregate_updates(self, server_round, updates, num_examples, client_ids, parameters):  # noqa: D102
        return qffl_aggregate(updates, np.array([self._losses[c] for c in client_ids]), self.q, 1.0 / self.lr)


def zero_shot_eval(backbone: VLBackbone, class_names: Sequence[str], z: torch.Tensor, y: torch.Tensor, a: torch.Tensor,
                   template: str = "a photo of a {} person") -> dict[str, float]:
    """Zero-shot CLIP with a hand-written prompt on normalised image features ``z``."""
    with torch.no_grad():
        t = F.normalize(backbone.encode_text_embeds(*_embed(backbone, [template.format(c) for c in class_names])), dim=-1)
        pred = (z @ t.t()).argmax(-1)
    return fairness_report(y.numpy(), pred.numpy(), a.numpy(), n_classes=len(class_names))


def _embed(backbone: VLBackbone, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = backbone.tokenize(texts)
    return backbone.token_embed(ids), ids
