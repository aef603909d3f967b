"""Our fairness metrics against fairlearn's reference implementation on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest

from trustlab.metrics.fairness import dp_diff, eo_diff, fairness_report, selection_rates, worst_group_acc


def _random_case(seed: int, n: int = 300, n_groups: int = 2, bias: float = 0.3):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_groups, n)
    y = rng.integers(0, 2, n)
    p = 0.3 + bias * (g == 1) + 0.3 * y
    yp = (rng.random(n) < np.clip(p, 0, 1)).astype(int)
    return y, yp, g


def test_hand_computed_values() -> None:
    y = [1, 1, 0, 0, 1, 1, 0, 0]
    yp = [1, 1, 1, 0, 1, 0, 0, 0]
    g = [0, 0, 0, 0, 1, 1, 1, 1]
    # selection: g0 3/4, g1 1/4 -> 0.5; TPR g0 1, g1 .5; FPR g0 .5, g1 0 -> EO .5
    assert dp_diff(y, yp, g) == pytest.approx(0.5)
    assert eo_diff(y, yp, g) == pytest.approx(0.5)
    assert worst_group_acc(y, yp, g) == pytest.approx(0.75)
    assert selection_rates(yp, g) == {0: 0.75, 1: 0.25}


@pytest.mark.parametrize("seed,n_groups", [(0, 2), (1, 2), (2, 3), (3, 4)])
def test_equal_to_fairlearn(seed: int, n_groups: int) -> None:
    fm = pytest.importorskip("fairlearn.metrics")
    from sklearn.metrics import accuracy_score

    y, yp, g = _random_case(seed, n_groups=n_groups)
    assert dp_diff(y, yp, g) == pytest.approx(fm.demographic_parity_difference(y, yp, sensitive_features=g), abs=1e-12)
    assert eo_diff(y, yp, g) == pytest.approx(fm.equalized_odds_difference(y, yp, sensitive_features=g), abs=1e-12)
    mf = fm.MetricFrame(metrics=accuracy_score, y_true=y, y_pred=yp, sensitive_features=g)
    assert worst_group_acc(y, yp, g) == pytest.approx(float(mf.group_min()), abs=1e-12)


def test_multiclass_is_one_vs_rest_max_of_fairlearn() -> None:
    fm = pytest.importorskip("fairlearn.metrics")
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 400)
    yp = np.where(rng.random(400) < 0.6, y, rng.integers(0, 3, 400))
    g = rng.integers(0, 2, 400)
    dp_ref = max(fm.demographic_parity_difference(y == c, yp == c, sensitive_features=g) for c in range(3))
    eo_ref = max(fm.equalized_odds_difference(y == c, yp == c, sensitive_features=g) for c in range(3))
    assert dp_diff(y, yp, g) == pytest.approx(dp_ref, abs=1e-12)
    assert eo_diff(y, yp, g) == pytest.approx(eo_ref, abs=1e-12)


def test_report_and_invariants() -> None:
    y, yp, g = _random_case(7)
    rep = fairness_report(y, yp, g)
    assert set(rep) == {"acc", "dp_diff", "eo_diff", "worst_group_acc"}
    assert all(0.0 <= v <= 1.0 for v in rep.values())
    assert rep["worst_group_acc"] <= rep["acc"]
    # group relabelling does not change any metric
    rep2 = fairness_report(y, yp, 1 - g)
    assert rep == pytest.approx(rep2)
    # a group-blind predictor has zero DP
    assert dp_diff(y, np.ones_like(yp), g) == 0.0


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="length"):
        dp_diff(None, [1, 0], [0])
    with pytest.raises(ValueError, match="at least one"):
        eo_diff([], [], [])


def test_group_table_is_fairlearn_metricframe_and_matches_dp_diff() -> None:
    from fairlearn.metrics import demographic_parity_difference

    from trustlab.metrics.fairness import group_table

    y, yp, g = _random_case(5)
    rows = group_table(y, yp, g, n_classes=2)
    by = {r["group"]: r for r in rows}
    assert set(by) == {0, 1, "overall"} and by["overall"]["count"] == len(y)
    for grp in (0, 1):
        m = g == grp
        assert by[grp]["count"] == m.sum()
        assert by[grp]["accuracy"] == pytest.approx(np.mean(y[m] == yp[m]))
        assert by[grp]["rate_0"] + by[grp]["rate_1"] == pytest.approx(1.0)
    spread = abs(by[0]["rate_1"] - by[1]["rate_1"])
    assert spread == pytest.approx(demographic_parity_difference(y, yp, sensitive_features=g))
    assert spread == pytest.approx(dp_diff(y, yp, g))
