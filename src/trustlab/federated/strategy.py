"""Flower-shaped server strategies: ``configure_train`` / ``aggregate_train`` (+ evaluate hooks).

The method names mirror Flower's Message-API ``flwr.serverapp.strategy.Strategy`` so a strategy
written here runs unchanged in :func:`trustlab.federated.simulation.simulate` and, through
:class:`trustlab.federated.flower.MessageStrategy`, as a Flower ServerApp (client ids = node ids).

Parameters travel as Flower ``NDArrays`` (a list of NumPy arrays, one per model tensor). A reply
carries the client's *local model* after training; :class:`UpdateStrategy` turns replies into an
update matrix ``Δ_k = θ_k − θ`` and delegates to a pure rule from :mod:`.aggregate`. Every round's
accepted/rejected clients and weights are kept in ``log_`` (and returned as round metrics), because a
defense that only reports final accuracy cannot be audited (BackFed#10: an FLTrust that silently
fell back to FedAvg).

Example:
    >>> import numpy as np
    >>> s = FedAvg()
    >>> theta = [np.zeros(2)]
    >>> replies = [FitReply(0, [np.array([1.0, 0.0])], 1), FitReply(1, [np.array([3.0, 2.0])], 3)]
    >>> new, info = s.aggregate_train(1, theta, replies)
    >>> new[0].tolist(), info["accepted"]
    ([2.5, 1.5], [0, 1])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trustlab.federated import aggregate as agg
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

NDArrays = list[np.ndarray]
ClientId = Hashable

__all__ = [
    "Bulyan",
    "EvaluateReply",
    "FLTrust",
    "FedAvg",
    "FedMedian",
    "FedTrimmedMean",
    "FitReply",
    "Flame",
    "FoolsGold",
    "Krum",
    "MultiKrum",
    "NDArrays",
    "Strategy",
    "UpdateStrategy",
    "flatten",
    "screen_replies",
    "unflatten",
]


@dataclass
class FitReply:
    """What a client sends back after local training (Flower's ``FitRes`` / train reply ``Message``).

    Attributes:
        client_id: Stable id of the client (Flower's ``src_node_id``); strategies key history by it.
        parameters: The client's local model after training.
        num_examples: Number of local training examples ``n_k``.
        metrics: Scalar metrics reported by the client.
    """

    client_id: ClientId
    parameters: NDArrays
    num_examples: int
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluateReply:
    """A client's evaluation reply (Flower's ``EvaluateRes``)."""

    client_id: ClientId
    loss: float
    num_examples: int
    metrics: dict[str, Any] = field(default_factory=dict)


def flatten(params: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate arrays into one float64 vector."""
    if not params:
        return np.zeros(0)
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in params])


def unflatten(vec: np.ndarray, like: Sequence[np.ndarray]) -> NDArrays:
    """Split ``vec`` back into arrays shaped (and typed) like ``like``."""
    out: NDArrays = []
    i = 0
    for p in like:
        n = int(np.prod(p.shape)) if p.shape else 1
        out.append(vec[i : i + n].reshape(p.shape).astype(p.dtype, copy=False))
        i += n
    if i != vec.size:
        raise ValueError(f"vector has {vec.size} entries, parameters need {i}")
    return out


def screen_replies(replies: Sequence[FitReply], parameters: NDArrays) -> tuple[list[FitReply], dict[ClientId, str]]:
    """Drop replies that cannot be aggregated, with the reason, before any rule sees them.

    A reply is excluded when its arrays do not match the global model (count or shapes), contain
    NaN/inf, or its ``num_examples`` is negative. Both engines (the in-process loop and the Flower
    ServerApp) call this, so a broken or hostile client is logged and skipped, never a crash.

    Returns:
        The valid replies and ``{client_id: reason}`` of the excluded ones.
    """
    valid: list[FitReply] = []
    excluded: dict[ClientId, str] = {}
    shapes = [np.shape(p) for p in parameters]
    for r in replies:
        got = [np.shape(p) for p in r.parameters]
        if len(got) != len(shapes):
            reason = f"sent {len(got)} arrays, the model has {len(shapes)}"
        elif got != shapes:
            bad = next(i for i, (a, b) in enumerate(zip(got, shapes, strict=True)) if a != b)
            reason = f"array {bad} has shape {got[bad]}, the model's is {shapes[bad]}"
        elif not all(np.all(np.isfinite(np.asarray(p, dtype=np.float64))) for p in r.parameters):
            reason = "parameters contain NaN or inf"
        elif not np.isfinite(r.num_examples) or r.num_examples < 0:
            reason = f"num_examples={r.num_examples} is not a non-negative number"
        else:
            valid.append(r)
            continue
        excluded[r.client_id] = reason
        log.warning("client %s excluded from aggregation: %s", r.client_id, reason)
    return valid, excluded


class Strategy(ABC):
    """Server-side logic of one federated algorithm (Flower-shaped).

    Subclasses implement :meth:`aggregate_train`; the other hooks have sensible defaults.
    """

    def initialize(self, parameters: NDArrays) -> None:  # noqa: B027 - optional hook
        """Called once with the initial global parameters before round 1."""

    def configure_train(self, server_round: int, parameters: NDArrays,
                        client_ids: Sequence[ClientId]) -> dict[ClientId, dict[str, Any]]:
        """The config sent to each sampled client this round (default: the round number)."""
        return {cid: {"server_round": server_round} for cid in client_ids}

    @abstractmethod
    def aggregate_train(self, server_round: int, parameters: NDArrays,
                        replies: Sequence[FitReply]) -> tuple[NDArrays, dict[str, Any]]:
        """Combine the replies into new global parameters; return them with round metrics."""

    def configure_evaluate(self, server_round: int, parameters: NDArrays,
                           client_ids: Sequence[ClientId]) -> dict[ClientId, dict[str, Any]]:
        """The config sent to each client asked to evaluate (default: none asked)."""
        return {}

    def aggregate_evaluate(self, server_round: int, replies: Sequence[EvaluateReply]) -> dict[str, Any]:
        """Weighted mean of the clients' losses and numeric metrics."""
        if not replies:
            return {}
        n = np.array([r.num_examples for r in replies], dtype=np.float64)
        w = n / max(n.sum(), 1.0)
        out: dict[str, Any] = {"loss": float(np.dot(w, [r.loss for r in replies]))}
        keys = set.intersection(*(set(r.metrics) for r in replies))
        for k in sorted(keys):
            vals = [r.metrics[k] for r in replies]
            if all(isinstance(v, (int, float)) for v in vals):
                out[k] = float(np.dot(w, vals))
        return out


class UpdateStrategy(Strategy):
    """Base for rules over the update matrix: ``θ ← θ + rule(Δ)``.

    Subclasses implement :meth:`aggregate_updates`. After each round ``log_`` gains one dict with the
    round, the accepted and rejected client ids, their weights and the replies excluded by
    :func:`screen_replies` (``{client_id: reason}``).
    """

    def __init__(self) -> None:
        self.log_: list[dict[str, Any]] = []

    @abstractmethod
    def aggregate_updates(self, server_round: int, updates: np.ndarray, num_examples: np.ndarray,
                          client_ids: list[ClientId], parameters: NDArrays) -> agg.Aggregate:
        """Apply the rule to ``updates`` (``(K, d)``), returning an :class:`~.aggregate.Aggregate`."""

    def aggregate_train(self, server_round: int, parameters: NDArrays,
                        replies: Sequence[FitReply]) -> tuple[NDArrays, dict[str, Any]]:
        replies, excluded = screen_replies(replies, parameters)
        if not replies:
            info0: dict[str, Any] = {"accepted": [], "rejected": [], "weights": {}, "excluded": excluded}
            self.log_.append({"round": server_round, **info0})
            return parameters, info0
        theta = flatten(parameters)
        updates = np.stack([flatten(r.parameters) - theta for r in replies])
        n = np.array([r.num_examples for r in replies], dtype=np.float64)
        ids = [r.client_id for r in replies]
        res = self.aggregate_updates(server_round, updates, n, ids, parameters)
        new = unflatten(theta + res.update, parameters)
        info = {
            "accepted": [c for c, a in zip(ids, res.accepted, strict=True) if a],
            "rejected": [c for c, a in zip(ids, res.accepted, strict=True) if not a],
            "weights": {c: float(w) for c, w in zip(ids, res.weights, strict=True)},
            "excluded": excluded,
        }
        self.log_.append({"round": server_round, **info})
        return new, info


class FedAvg(UpdateStrategy):
    """Federated averaging weighted by ``num_examples`` (McMahan et al., AISTATS 2017)."""

    def aggregate_updates(self, server_round, updates, num_examples, client_ids, parameters):  # noqa: D102
        return agg.fedavg(updates, num_examples)


class FedMedian(UpdateStrategy):
    """Coordinate-wise median (Yin et al., ICML 2018)."""

    def aggregate_updates(self, server_round, updates, num_examples, client_ids, parameters):  # noqa: D102
        return agg.median(updates)


class FedTrimmedMean(UpdateStrategy):
    """Coordinate-wise trimmed mean (Yin et al., ICML 2018).

    Args:
        beta: Fraction trimmed at each end, in ``[0, 0.5)``.
        at_least: Trim ``ceil(beta · K)`` values per side (never fewer than the share ``beta`` of
            the ``K`` clients of the round, e.g. the attacker fraction) instead of Flower's
            ``floor(beta · K)``; capped so that one value per coordinate remains.
    """

    def __init__(self, beta: float = 0.2, at_least: bool = False) -> None:
        super().__init__()
        if not 0.0 <= beta < 0.5:
            raise ValueError(f"beta must be in [0, 0.5), got {beta}")
        self.beta, self.at_least = beta, at_least

    def round_beta(self, k: int) -> float:
        """The per-side fraction passed to :func:`~.aggregate.trimmed_mean` for ``k`` clients."""
        if not self.at_least:
            return self.beta
        cut = min(int(np.ceil(self.beta * k - 1e-9)), (k - 1) // 2)
        return min((cut + 1e-6) / k, 0.5 - 1e-9)

    def aggregate_updates(self, server_round, updates, num_examples, client_ids, parameters):  # noqa: D102
        return agg.trimmed_mean(updates, self.round_beta(len(client_ids)))


class MultiKrum(UpdateStrategy):
    """Multi-Krum (Blanchard et al., NeurIPS 2017).

    Args:
        num_malicious: Assumed number of Byzantine clients ``f`` per round.
        num_selected: Clients averaged (``None``: ``K − f``); 1 gives Krum.
    """

    def __init__(self, num_malicious: int, num_selected: int | None = None) -> None:
        super().__init__()
        if num_malicious < 0:
            raise ValueError(f"num_malicious must be >= 0, got {num_malicious}")
        if num_selected is not None and num_selected < 1:
            raise ValueError(f"num_selected must be >= 1, got {num_selected}")
        self.num_malicious = num_malicious
        self.num_selected = num_selected

    def aggregate_updates(self, server_round, updates, num_examples, client_ids, parameters):  # noqa: D102
        m = self.num_selected if self.num_selected is not None else max(len(client_ids) - self.num_malicious, 1)
        return agg.multikrum(updates, self.num_malicious, min(m, len(client_ids)), num_examples)


class Krum(MultiKrum):
    """Krum: keep the single most central update (Blanchard et al., NeurIPS 2017)."""

    def __init__(self, num_malicious: int) -> None:
        super().__init__(num_malicious, num_selected=1)


class Bulyan(UpdateStrategy):
    """Bulyan (El Mhamdi et al., ICML 2018): Multi-Krum selection, then a trimmed mean around the median.

    Args:
        num_malicious: Assumed number ``f`` of Byzantine clients per round. Bulyan needs
            ``K >= 4f + 3`` clients; with fewer, ``f`` is lowered to ``(K − 3) // 4`` for that round (logged;
            Flower's ``Bulyan`` skips the round instead). Fewer than 3 clients: plain median.
    """

    def __init__(self, num_malicious: int) -> None:
        super().__init__()
        if num_malicious < 0:
            raise ValueError(f"num_malicious must be >= 0, got {num_malicious}")
        self.num_malicious = num_malicious

    def aggregate_updates(self, server_round, updates, num_examples, client_ids, parameters):  # noqa: D102
        k = len(client_ids)
        if k < 3:
            return agg.median(updates)
        f = min(self.num_malicious, (k - 3) // 4)
        if f < self.num_malicious:
            log.info("Bulyan round %d: %d clients allow f=%d (asked %d)", server_round, k, f, self.num_malicious)
        return agg.bulyan(updates, f)


class Flame(UpdateStrategy):
    """FLAME (Nguyen et al., USENIX Security 2022): HDBSCAN filter, median-norm clipping, noise.

    Args:
        noise_lambda: Noise std relative to the clip bound (0 disables it).
        seed: Seed of the noise generator.
    """

    def __init__(self, noise_lambda: float = 0.001, seed: int = 0) -> None:
        super().__init__()
        if noise_lambda < 0:
            raise ValueError(f"noise_lambda must be >= 0, got {noise_lambda}")
        self.noise_lambda = noise_lambda
        self.rng_ = np.random.default_rng(seed)

    def aggregate_updates(self, server_round, updates, num_examples, client_ids, parameters):  # noqa: D102
        return agg.flame(updates, self.noise_lambda, self.rng_)


class FLTrust(UpdateStrategy):
    """FLTrust (Cao et al., NDSS 2021): trust scores from the server's own root-data update.

    Args:
        server_update_fn: ``f(global_parameters, server_round) -> local parameters`` trained by the
            server on its small clean root data set; ``g₀`` is their difference to the global model.
    """

    def __init__(self, server_update_fn: Callable[[NDArrays, int], NDArrays]) -> None:
        super().__init__()
        if not callable(server_update_fn):
            raise ValueError("server_update_fn must be callable")
        self.server_update_fn = server_update_fn

    def aggregate_updates(self, server_round, updates, num_examples, client_ids, parameters):  # noqa: D102
        g0 = flatten(self.server_update_fn(parameters, server_round)) - flatten(parameters)
        return agg.fltrust(updates, g0)


class FoolsGold(UpdateStrategy):
    """FoolsGold (Fung et al., RAID 2020): down-weight clients whose update *histories* look alike.

    Args:
        feature_arrays: Indices (into the parameter list) used as features; default: the last two
            arrays (the output layer's weight and bias), as in the reference implementation.
        kappa: Logit confidence.
    """

    def __init__(self, feature_arrays: Sequence[int] | None = None, kappa: float = 1.0) -> None:
        super().__init__()
        if kappa <= 0:
            raise ValueError(f"kappa must be > 0, got {kappa}")
        self.feature_arrays = None if feature_arrays is None else list(feature_arrays)
        self.kappa = kappa
        self.history_: dict[ClientId, np.ndarray] = {}

    def _features(self, update: np.ndarray, parameters: NDArrays) -> np.ndarray:
        idx = self.feature_arrays if self.feature_arrays is not None else list(range(len(parameters)))[-2:]
        parts = unflatten(update, parameters)
        return np.concatenate([np.asarray(parts[i], dtype=np.float64).ravel() for i in idx])

    def aggregate_updates(self, server_round, updates, num_examples, client_ids, parameters):  # noqa: D102
        rows = []
        for cid, u in zip(client_ids, updates, strict=True):
            f = self._features(u, parameters)
            self.history_[cid] = self.history_.get(cid, np.zeros_like(f)) + f
            rows.append(self.history_[cid])
        return agg.foolsgold(updates, np.stack(rows), self.kappa)
