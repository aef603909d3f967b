"""A deterministic, single-process federated simulator (no Ray).

Clients are plain objects with a stable ``cid``, a persistent ``state`` dict (Flower's
``Context.state`` analogue: memory across rounds that never leaves the client) and a
``fit(parameters, config) -> FitReply`` method. The server loop is Flower's: sample clients,
``strategy.configure_train``, local training, ``strategy.aggregate_train``, optional client and
centralised evaluation. Client sampling uses a generator derived from ``(seed, round)``, so a run is
reproducible regardless of which strategy is used.

Example:
    >>> import numpy as np
    >>> from trustlab.federated import FedAvg, FitReply, simulate
    >>> class Const:
    ...     def __init__(self, cid, v): self.cid, self.v, self.state = cid, v, {}
    ...     def fit(self, parameters, config): return FitReply(self.cid, [parameters[0] + self.v], 1)
    >>> h = simulate(FedAvg(), [Const(0, 1.0), Const(1, 3.0)], [np.zeros(1)], num_rounds=2)
    >>> h.parameters[0].tolist()
    [4.0]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from trustlab.federated.strategy import ClientId, EvaluateReply, FitReply, NDArrays, Strategy
from trustlab.utils.logging import get_logger
from trustlab.utils.progress import progress
from trustlab.utils.seed import derive_seed

log = get_logger(__name__)

__all__ = ["Client", "History", "RoundLog", "get_parameters", "sample_clients", "set_parameters", "simulate"]


@runtime_checkable
class Client(Protocol):
    """What the simulator needs from a client.

    Attributes:
        cid: Stable client id.
        state: Persistent per-client memory across rounds.
    """

    cid: ClientId
    state: dict[str, Any]

    def fit(self, parameters: NDArrays, config: dict[str, Any]) -> FitReply:
        """Train locally from ``parameters`` and reply with the local model."""
        ...


@dataclass
class RoundLog:
    """One round of a simulation.

    Attributes:
        round: 1-based round number.
        selected: Ids of the clients sampled for training.
        train: Metrics returned by ``strategy.aggregate_train`` (accepted/rejected/weights...).
        evaluate: Aggregated client evaluation (empty when no client evaluated).
        centralized: What ``evaluate_fn`` returned (empty when not given).
        seconds: Wall time of the round.
    """

    round: int
    selected: list[ClientId]
    train: dict[str, Any] = field(default_factory=dict)
    evaluate: dict[str, Any] = field(default_factory=dict)
    centralized: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class History:
    """Result of :func:`simulate`: final parameters and the per-round logs."""

    parameters: NDArrays
    rounds: list[RoundLog] = field(default_factory=list)

    def curve(self, key: str) -> list[float]:
        """Per-round values of a centralised metric ``key``."""
        return [float(r.centralized[key]) for r in self.rounds if key in r.centralized]


def sample_clients(client_ids: Sequence[ClientId], fraction: float, min_clients: int,
                   generator: np.random.Generator) -> list[ClientId]:
    """Sample ``max(min_clients, round(fraction · K))`` clients without replacement (order kept)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    k = len(client_ids)
    m = min(k, max(min_clients, int(round(fraction * k))))
    if m == k:
        return list(client_ids)
    idx = np.sort(generator.choice(k, size=m, replace=False))
    return [client_ids[i] for i in idx]


def simulate(
    strategy: Strategy,
    clients: Sequence[Client],
    initial_parameters: NDArrays,
    num_rounds: int,
    fraction_fit: float = 1.0,
    min_fit_clients: int = 1,
    fraction_evaluate: float = 0.0,
    evaluate_fn: Callable[[int, NDArrays], dict[str, Any]] | None = None,
    seed: int = 0,
    desc: str = "rounds",
) -> History:
    """Run ``num_rounds`` of federated training in process.

    Args:
        strategy: The server strategy.
        clients: The client population (ids must be unique).
        initial_parameters: Initial global model.
        num_rounds: Number of rounds (>= 1).
        fraction_fit: Fraction of clients sampled per round.
        min_fit_clients: Minimum number sampled per round.
        fraction_evaluate: Fraction asked to evaluate (clients need an ``evaluate`` method).
        evaluate_fn: Centralised evaluation ``f(round, parameters) -> metrics`` after every round
            (also called with round 0 before training).
        seed: Seed of client sampling.
        desc: Progress-bar label.

    Returns:
        A :class:`History` with the final parameters and per-round logs.
    """
    if num_rounds < 1:
        raise ValueError(f"num_rounds must be >= 1, got {num_rounds}")
    ids = [c.cid for c in clients]
    if len(set(ids)) != len(ids):
        raise ValueError("client ids must be unique")
    by_id = {c.cid: c for c in clients}
    params = [np.array(p, copy=True) for p in initial_parameters]
    strategy.initialize(params)
    hist = History(parameters=params)
    if evaluate_fn is not None:
        hist.rounds.append(RoundLog(round=0, selected=[], centralized=dict(evaluate_fn(0, params))))
    for rnd in progress(range(1, num_rounds + 1), desc=desc, total=num_rounds):
        t0 = time.perf_counter()
        rng = np.random.default_rng(derive_seed(seed, "sample", rnd))
        selected = sample_clients(ids, fraction_fit, min_fit_clients, rng)
        configs = strategy.configure_train(rnd, params, selected)
        replies = [by_id[cid].fit([p.copy() for p in params], dict(cfg)) for cid, cfg in configs.items()]
        params, train_info = strategy.aggregate_train(rnd, params, replies)
        entry = RoundLog(round=rnd, selected=list(selected), train=train_info)
        if fraction_evaluate > 0:
            ev_ids = sample_clients(ids, fraction_evaluate, 1, np.random.default_rng(derive_seed(seed, "eval", rnd)))
            ev_cfg = strategy.configure_evaluate(rnd, params, ev_ids)
            ev = []
            for cid, cfg in ev_cfg.items():
                loss, n, m = by_id[cid].evaluate([p.copy() for p in params], dict(cfg))  # type: ignore[attr-defined]
                ev.append(EvaluateReply(cid, float(loss), int(n), dict(m)))
            entry.evaluate = strategy.aggregate_evaluate(rnd, ev)
        if evaluate_fn is not None:
            entry.centralized = dict(evaluate_fn(rnd, params))
        entry.seconds = time.perf_counter() - t0
        hist.rounds.append(entry)
        hist.parameters = params
        log.debug("round %d: %s", rnd, entry.centralized)
    return hist


def get_parameters(module: torch.nn.Module) -> NDArrays:
    """A module's state dict as Flower ``NDArrays`` (state-dict order)."""
    return [v.detach().cpu().numpy().copy() for v in module.state_dict().values()]


def set_parameters(module: torch.nn.Module, parameters: NDArrays) -> None:
    """Load ``NDArrays`` (state-dict order) into ``module`` in place."""
    keys = list(module.state_dict().keys())
    if len(keys) != len(parameters):
        raise ValueError(f"module has {len(keys)} tensors, got {len(parameters)} arrays")
    state = {k: torch.as_tensor(np.asarray(v)) for k, v in zip(keys, parameters, strict=True)}
    module.load_state_dict(state, strict=True)
