"""Our robust rules are Flower's: each strategy, run through the Message API, equals Flower's own strategy.

Flower's ``flwr.serverapp.strategy`` FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum and Bulyan
aggregate *weights*; ours aggregate updates ``Δ_k = θ_k − θ`` and add them back, which is the same
computation (every rule is translation-equivariant). Each test feeds the same reply Messages to both.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp import strategy as fs  # noqa: E402
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean  # noqa: E402

from trustlab.federated import aggregate as agg  # noqa: E402
from trustlab.federated.flower import InlineGrid, MessageStrategy, make_client_app  # noqa: E402
from trustlab.federated.strategy import (  # noqa: E402
    Bulyan,
    FedAvg,
    FedMedian,
    FedTrimmedMean,
    FitReply,
    Krum,
    MultiKrum,
)

InlineGrid(make_client_app(lambda pid, ctx: None), 1)  # sets Flower's task identity for Message()


def _replies(k: int, seed: int = 0) -> tuple[list[np.ndarray], list[Message]]:
    rng = np.random.default_rng(seed)
    theta = [rng.normal(size=(3, 4)), rng.normal(size=5)]
    out = []
    for i in range(k):
        local = [p + rng.normal(scale=1.0 + 3.0 * (i % 4 == 0), size=p.shape) for p in theta]
        ins = Message(RecordDict({"arrays": ArrayRecord(theta), "config": ConfigRecord({})}),
                      dst_node_id=1000 + i, message_type="train")
        out.append(Message(RecordDict({"arrays": ArrayRecord(local),
                                       "metrics": MetricRecord({"num-examples": 1 + i % 3})}), reply_to=ins))
    return theta, out


def _ours(strategy, theta, replies):  # noqa: ANN001, ANN202
    ms = MessageStrategy(strategy)
    ms.current_ = theta
    arr, _ = ms.aggregate_train(1, replies)
    return arr.to_numpy_ndarrays()


CASES = {
    "fedavg": (lambda k: FedAvg(), lambda k: fs.FedAvg()),
    "median": (lambda k: FedMedian(), lambda k: fs.FedMedian()),
    "trimmed_mean": (lambda k: FedTrimmedMean(0.2), lambda k: fs.FedTrimmedAvg(beta=0.2)),
    "krum": (lambda k: Krum(2), lambda k: fs.Krum(num_malicious_nodes=2)),
    "multikrum": (lambda k: MultiKrum(2, 5), lambda k: fs.MultiKrum(num_malicious_nodes=2, num_nodes_to_select=5)),
    "bulyan": (lambda k: Bulyan(2), lambda k: fs.Bulyan(num_malicious_nodes=2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_strategy_equals_flowers_own(name: str) -> None:
    k = 11  # Bulyan needs K >= 4f + 3
    theta, replies = _replies(k)
    ours_fn, flower_fn = CASES[name]
    ours = _ours(ours_fn(k), theta, replies)
    _, replies2 = _replies(k)
    ref, _ = flower_fn(k).aggregate_train(1, replies2)
    for a, b in zip(ours, ref.to_numpy_ndarrays(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_trimmed_mean_equals_flower_trim_mean_at_several_betas() -> None:
    u = np.random.default_rng(4).normal(size=(10, 6))
    for beta in (0.0, 0.1, 0.2, 0.3, 0.4):
        np.testing.assert_allclose(agg.trimmed_mean(u, beta).update, trim_mean(u, beta))


def test_trimmed_mean_at_least_trims_the_attacker_fraction() -> None:
    s = FedTrimmedMean(0.3, at_least=True)
    for k in (5, 7, 10, 20):
        cut = int(s.round_beta(k) * k)
        assert cut >= 0.3 * k - 1e-9 or cut == (k - 1) // 2, (k, cut)
    assert int(FedTrimmedMean(0.3).round_beta(5) * 5) == 1  # Flower's floor would trim 1 of 1.5 attackers
    assert int(s.round_beta(5) * 5) == 2
    # with 3 of 10 updates far out on one side, trimming 3 per side removes them exactly
    u = np.r_[np.zeros((7, 2)), np.full((3, 2), 100.0)]
    assert np.allclose(agg.trimmed_mean(u, s.round_beta(10)).update, 0.0)


def test_bulyan_rejects_the_outliers_and_needs_4f_plus_3() -> None:
    u = np.r_[np.random.default_rng(0).normal(size=(9, 3)), np.full((2, 3), 50.0)]
    res = agg.bulyan(u, 2)
    assert np.all(np.abs(res.update) < 2) and not res.accepted[-2:].any()
    assert np.all(np.abs(agg.fedavg(u).update) > 5)  # FedAvg would be pulled away: the defense matters
    with pytest.raises(ValueError, match="4f"):
        agg.bulyan(u[:10], 2)
    r = Bulyan(3).aggregate_train(1, [np.zeros(3)], [FitReply(i, [row], 1) for i, row in enumerate(u)])[1]
    assert r["accepted"]  # f lowered to (K - 3) // 4 = 2 for 11 clients instead of failing
