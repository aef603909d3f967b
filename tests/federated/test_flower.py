"""A real Flower run over loopback: Flower's gRPC server and 3 Flower clients drive our strategies."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from trustlab.federated import FedMedian, FitReply, simulate

pytest.importorskip("flwr")

from trustlab.federated.flower import run_flower_loopback  # noqa: E402


class ToyClient:
    """Moves the model towards its own target vector (a 1-step 'local training')."""

    def __init__(self, cid: int, target: np.ndarray, n: int) -> None:
        self.cid, self.target, self.n, self.state = cid, target, n, {}

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> FitReply:
        self.state["calls"] = self.state.get("calls", 0) + 1
        new = [p + 0.5 * (t - p) for p, t in zip(parameters, self.target, strict=True)]
        return FitReply(self.cid, new, self.n, {"round": int(config.get("server_round", 0))})


def _clients() -> list[ToyClient]:
    rng = np.random.default_rng(0)
    return [ToyClient(i, [rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)], n)
            for i, n in enumerate([10, 20, 30])]


def test_flower_loopback_matches_in_process_simulation() -> None:
    # One Flower server per process: the legacy gRPC server keeps global state between runs.
    strategy_cls = FedMedian
    init = [np.zeros((2, 3), np.float32), np.zeros(3, np.float32)]
    flower_clients = _clients()
    strat = strategy_cls()
    final, metrics = run_flower_loopback(strat, flower_clients, init, num_rounds=2, timeout=60)
    assert len(metrics) == 2 and sorted(metrics[-1]["accepted"]) == [0, 1, 2]  # ids survive the wire
    assert all(c.state["calls"] == 2 for c in flower_clients)
    ref = simulate(strategy_cls(), _clients(), init, num_rounds=2)
    for a, b in zip(final, ref.parameters, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
