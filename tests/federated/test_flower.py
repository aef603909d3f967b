"""Flower Message API: ServerApp/ClientApp driving our strategies (messages delivered in-process)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from trustlab.federated import FedAvg, FedMedian, FitReply, FoolsGold, simulate  # noqa: E402
from trustlab.federated.flower import InlineGrid, MessageStrategy, make_client_app  # noqa: E402


class ToyClient:
    """Moves the model half-way towards its own target; reports a (possibly forged) ``cid`` metric."""

    def __init__(self, cid: int, target: list[np.ndarray], n: int, claimed: int | None = None) -> None:
        self.cid, self.target, self.n, self.state = cid, target, n, {}
        self.claimed = cid if claimed is None else claimed

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> FitReply:
        new = [p + 0.5 * (t - p) for p, t in zip(parameters, self.target, strict=True)]
        return FitReply(self.claimed, new, self.n, {"cid": self.claimed})


def _clients(k: int = 4, **kw: Any) -> list[ToyClient]:
    rng = np.random.default_rng(0)
    return [ToyClient(i, [rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)],
                      10 * (i + 1), **kw) for i in range(k)]


INIT = [np.zeros((2, 3), np.float32), np.zeros(3, np.float32)]


def _flower(strategy, clients, rounds=2, fraction=1.0):  # noqa: ANN001, ANN202
    app = make_client_app(lambda pid, ctx: clients[pid])
    ms = MessageStrategy(strategy, fraction_train=fraction, min_available_nodes=len(clients), seed=0)
    return ms, ms.run(InlineGrid(app, len(clients), seed=3), INIT, rounds)


@pytest.mark.parametrize("cls", [FedAvg, FedMedian])
def test_message_api_matches_in_process_simulation(cls: type) -> None:
    _, hist = _flower(cls(), _clients())
    ref = simulate(cls(), _clients(), INIT, num_rounds=2)
    for a, b in zip(hist.parameters, ref.parameters, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert len(hist.rounds) == 3 and len(hist.rounds[-1].train["accepted"]) == 4


def test_identity_is_the_node_id_not_the_reported_cid() -> None:
    # every client claims to be client 0, in its FitReply and its metrics
    clients = _clients(4, claimed=0)
    fg = FoolsGold()
    ms, hist = _flower(fg, clients, rounds=3, fraction=0.5)
    nodes = set(InlineGrid(make_client_app(lambda p, c: None), 4, seed=3).nodes)
    assert set(fg.history_) <= nodes and 0 not in fg.history_
    seen = {c for r in hist.rounds[1:] for c in r.selected}
    assert set(fg.history_) == seen and len(seen) >= 3  # kept apart, accumulated across partial rounds
    assert all(len(r.selected) == 2 for r in hist.rounds[1:])
    assert set(ms.partitions_) == seen  # bookkeeping: node -> partition, never used for identity


def test_in_process_engine_merges_forged_ids_the_message_api_does_not() -> None:
    # the failure the node id prevents: in-process, a reply's own client_id is trusted
    fg = FoolsGold()
    simulate(fg, _clients(4, claimed=0), INIT, num_rounds=1)
    assert list(fg.history_) == [0]


class BadClient(ToyClient):
    def __init__(self, mode: str, *a: Any) -> None:
        super().__init__(*a)
        self.mode = mode

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> FitReply:
        r = super().fit(parameters, config)
        if self.mode == "nan":
            r.parameters[0][0, 0] = np.nan
        elif self.mode == "shape":
            r.parameters[1] = np.zeros(7, np.float32)
        elif self.mode == "count":
            r.parameters = r.parameters[:1]
        return r


@pytest.mark.parametrize("engine", ["flower", "inprocess"])
def test_nan_and_wrongly_shaped_clients_are_excluded_with_a_reason(engine: str, caplog: pytest.LogCaptureFixture) -> None:
    good = _clients(3)
    bad = [BadClient(m, 3 + i, good[0].target, 5) for i, m in enumerate(("nan", "shape", "count"))]
    with caplog.at_level(logging.WARNING):
        if engine == "flower":
            _, hist = _flower(FedAvg(), good + bad, rounds=1)
        else:
            hist = simulate(FedAvg(), good + bad, INIT, num_rounds=1)
    info = hist.rounds[-1].train
    assert len(info["excluded"]) == 3 and len(info["accepted"]) == 3
    reasons = " ".join(info["excluded"].values())
    assert "NaN" in reasons and "shape" in reasons and "arrays" in reasons
    assert "excluded from aggregation" in caplog.text
    ref = simulate(FedAvg(), _clients(3), INIT, num_rounds=1)
    for a, b in zip(hist.parameters, ref.parameters, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert np.all(np.isfinite(hist.parameters[0]))
