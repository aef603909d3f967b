"""Unit tests of the pure aggregation rules (trustlab.federated.aggregate)."""

from __future__ import annotations

import numpy as np
import pytest

from trustlab.federated import aggregate as agg
from trustlab.federated.strategy import FedAvg, FitReply, FoolsGold, flatten, unflatten


def _updates(k: int = 7, d: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(k, d))


RULES = {
    "fedavg": lambda u, n: agg.fedavg(u, n),
    "median": lambda u, n: agg.median(u),
    "trimmed_mean": lambda u, n: agg.trimmed_mean(u, 0.2),
    "multikrum": lambda u, n: agg.multikrum(u, 2, 4, n),
    "bulyan": lambda u, n: agg.bulyan(u, 1),
    "flame": lambda u, n: agg.flame(u, noise_lambda=0.0),
    "fltrust": lambda u, n: agg.fltrust(u, u.mean(axis=0)),
    "foolsgold": lambda u, n: agg.foolsgold(u, u),
    "weighted_trimmed_mean": lambda u, n: agg.weighted_trimmed_mean(u, np.ones(len(u)) if n is None else n, 0.25),
    "weighted_median": lambda u, n: agg.weighted_median(u, np.ones(len(u)) if n is None else n),
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_permutation_invariance(name: str) -> None:
    u = _updates()
    n = np.arange(1, 8, dtype=float)
    perm = np.random.default_rng(1).permutation(7)
    a = RULES[name](u, n)
    b = RULES[name](u[perm], n[perm])
    np.testing.assert_allclose(a.update, b.update, atol=1e-10)
    np.testing.assert_allclose(a.weights[perm], b.weights, atol=1e-10)
    assert np.array_equal(a.accepted[perm], b.accepted)


def test_krum_hand_computed() -> None:
    u = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    # f = 1 -> K - f - 2 = 2 nearest neighbours; squared distances summed by hand.
    np.testing.assert_allclose(agg.krum_scores(u, 1), [5.0, 2.0, 5.0, 65.0, 82.0])
    k = agg.krum(u, 1)
    assert k.update.tolist() == [1.0] and k.accepted.tolist() == [False, True, False, False, False]
    mk = agg.multikrum(u, 1, num_selected=3)
    assert mk.update.tolist() == [1.0] and mk.accepted.tolist() == [True, True, True, False, False]


def test_krum_f0_is_nearest_neighbour_rule() -> None:
    u = np.array([[0.0, 0.0], [0.0, 1.0], [5.0, 5.0], [0.2, 0.1]])
    # f = 0 -> K - 2 = 2 neighbours
    d = agg.pairwise_sq_distances(u)
    expect = [np.sort(np.delete(d[i], i))[:2].sum() for i in range(4)]
    np.testing.assert_allclose(agg.krum_scores(u, 0), expect)


def test_fedavg_matches_flower_aggregate() -> None:
    pytest.importorskip("flwr")
    from flwr.server.strategy.aggregate import aggregate as flwr_aggregate

    rng = np.random.default_rng(3)
    like = [np.zeros((3, 2), np.float32), np.zeros(4, np.float32)]
    theta = [rng.normal(size=p.shape).astype(np.float32) for p in like]
    locals_ = [[rng.normal(size=p.shape).astype(np.float32) for p in like] for _ in range(5)]
    n = [10, 3, 7, 1, 20]
    ours, _ = FedAvg().aggregate_train(1, theta, [FitReply(i, p, k) for i, (p, k) in enumerate(zip(locals_, n, strict=True))])
    ref = flwr_aggregate(list(zip(locals_, n, strict=True)))
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_median_and_trimmed_mean_reference() -> None:
    from scipy.stats import trim_mean

    u = _updates(10, 5)
    np.testing.assert_allclose(agg.median(u).update, np.median(u, axis=0))
    np.testing.assert_allclose(agg.trimmed_mean(u, 0.2).update, trim_mean(u, 0.2, axis=0))


def test_weighted_median_reference() -> None:
    u = _updates(9, 6)  # odd K: equal weights give the ordinary median
    np.testing.assert_allclose(agg.weighted_median(u, np.ones(9)).update, np.median(u, axis=0))
    col = np.array([[0.0], [1.0], [2.0], [10.0]])
    # cumulative weights in sorted order 1, 2, 3, 9 of 9: the first reaching 4.5 is the value 10
    assert agg.weighted_median(col, [1.0, 1.0, 1.0, 6.0]).update.tolist() == [10.0]
    res = agg.weighted_median(col, [1.0, 1.0, 0.0, 0.0])  # zero-weight clients never supply a value
    assert res.update.tolist() == [0.0] and res.accepted.tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="non-negative"):
        agg.weighted_median(col, [0.0, 0.0, 0.0, 0.0])


def test_weighted_trimmed_mean_reference() -> None:
    from scipy.stats import trim_mean

    u = _updates(8, 5)
    np.testing.assert_allclose(agg.weighted_trimmed_mean(u, np.ones(8), 0.25).update, trim_mean(u, 0.25, axis=0))
    np.testing.assert_allclose(agg.weighted_trimmed_mean(u, np.arange(1.0, 9.0), 0.0).update,
                               np.arange(1.0, 9.0) @ u / 36.0)
    # weights 1, 1, 2 (total 4) over values 0, 1, 10, central half [1, 3]: 1 from value 1, 1 from 10
    assert agg.weighted_trimmed_mean(np.array([[0.0], [1.0], [10.0]]), [1.0, 1.0, 2.0], 0.25).update.tolist() == [5.5]
    with pytest.raises(ValueError, match="trim"):
        agg.weighted_trimmed_mean(u, np.ones(8), 0.5)


def test_every_defense_changes_the_aggregate_with_an_outlier() -> None:
    """BackFed#10: a defense that silently falls back to FedAvg must be caught."""
    u = np.random.default_rng(0).normal(0.0, 0.1, size=(8, 20)) + 1.0
    u[0] = -40.0
    mean = agg.fedavg(u).update
    for name, rule in RULES.items():
        if name == "fedavg":
            continue
        out = rule(u, None) if name != "fltrust" else agg.fltrust(u, np.ones(20))
        assert np.linalg.norm(out.update - mean) > 1.0, name


def test_flame_clips_to_median_of_all_clients() -> None:
    u = np.zeros((5, 2))
    u[:, 0] = [1.0, 1.0, 2.0, 100.0, 100.0]  # median norm over ALL clients is 2
    out = agg.flame(u, noise_lambda=0.0, min_cluster_size=2)
    assert np.all(np.linalg.norm(u * np.minimum(1, 2 / np.linalg.norm(u, axis=1))[:, None], axis=1) <= 2 + 1e-12)
    assert np.linalg.norm(out.update) <= 2.0 + 1e-9


def test_flame_rejects_opposite_direction_minority() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=30)
    u = np.stack([base + rng.normal(0, 0.2, 30) for _ in range(7)] + [-base + rng.normal(0, 0.2, 30) for _ in range(3)])
    acc = agg.flame_filter(u)
    # HDBSCAN may call a benign outlier noise (FLAME rejects noise points too); attackers must all go.
    assert acc[:7].sum() >= 5 and not acc[7:].any()


def test_fltrust_zero_trust_for_opposed_updates() -> None:
    g0 = np.array([1.0, 0.0])
    u = np.array([[2.0, 0.0], [-1.0, 0.0]])
    out = agg.fltrust(u, g0)
    np.testing.assert_allclose(out.update, [1.0, 0.0])  # rescaled to ||g0||
    assert out.accepted.tolist() == [True, False]


def test_foolsgold_downweights_sybils() -> None:
    rng = np.random.default_rng(0)
    honest = rng.normal(size=(5, 10))
    sybil = np.tile(rng.normal(size=10), (3, 1)) + rng.normal(0, 1e-3, size=(3, 10))
    w = agg.foolsgold_weights(np.vstack([honest, sybil]))
    assert w[5:].max() < w[:5].min()


def test_foolsgold_strategy_accumulates_history() -> None:
    s = FoolsGold()
    like = [np.zeros((2, 2)), np.zeros(2)]
    for rnd in (1, 2):
        s.aggregate_train(rnd, like, [FitReply(i, [np.full((2, 2), i + 1.0), np.full(2, -i)], 1) for i in range(3)])
    assert set(s.history_) == {0, 1, 2} and len(s.log_) == 2


def test_flatten_roundtrip_and_errors() -> None:
    like = [np.zeros((2, 3), np.float32), np.zeros(1, np.float32)]
    v = np.arange(7.0)
    back = unflatten(v, like)
    assert back[0].dtype == np.float32 and flatten(back).tolist() == v.tolist()
    with pytest.raises(ValueError):
        unflatten(np.arange(5.0), like)
    with pytest.raises(ValueError):
        agg.trimmed_mean(_updates(), beta=0.5)
    with pytest.raises(ValueError):
        agg.fedavg(np.array([[np.nan]]))
