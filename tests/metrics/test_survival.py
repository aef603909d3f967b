"""Survival metrics cross-checked against scikit-survival (the reference implementation)."""

from __future__ import annotations

import numpy as np
import pytest

from trustlab.metrics.survival import (
    brier_score,
    cumulative_dynamic_auc,
    harrell_c_index,
    integrated_brier_score,
    kaplan_meier,
    logrank_test,
    uno_c_index,
)

sksurv_metrics = pytest.importorskip("sksurv.metrics")
from sksurv.compare import compare_survival  # noqa: E402
from sksurv.nonparametric import kaplan_meier_estimator  # noqa: E402
from sksurv.util import Surv  # noqa: E402


def _data(seed: int, n: int = 120, ties: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    t = rng.exponential(np.exp(-risk))
    if ties:
        t = np.round(t, 1) + 0.1  # many tied times
    c = rng.exponential(1.5, size=n) + 0.1
    if ties:
        c = np.round(c, 1) + 0.1
    time = np.minimum(t, c)
    event = t <= c
    pred = risk + rng.normal(scale=0.8, size=n)
    if ties:
        pred = np.round(pred, 1)  # tied risks too
    return time, event, pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_harrell_equals_sksurv(seed: int) -> None:
    time, event, pred = _data(seed)
    ref = sksurv_metrics.concordance_index_censored(event, time, pred)[0]
    assert harrell_c_index(time, event, pred) == pytest.approx(ref, abs=1e-12)
    assert harrell_c_index(time, event.astype(int), pred) == pytest.approx(ref, abs=1e-12)


def test_harrell_orientation_and_errors() -> None:
    assert harrell_c_index([1, 2, 3], [True, True, True], [3, 2, 1]) == 1.0
    assert harrell_c_index([1, 2, 3], [True, True, True], [1, 2, 3]) == 0.0
    assert harrell_c_index([1, 2, 3], [True, True, True], [1, 1, 1]) == 0.5
    with pytest.raises(ValueError, match="censored"):
        harrell_c_index([1, 2], [False, False], [1, 2])
    with pytest.raises(ValueError, match="risk has"):
        harrell_c_index([1, 2], [True, False], [1, 2, 3])


@pytest.mark.parametrize("seed", [0, 3])
def test_uno_auc_brier_equal_sksurv(seed: int) -> None:
    time, event, pred = _data(seed, ties=seed == 0)
    tr_time, tr_event, _ = _data(seed + 10, n=300, ties=seed == 0)
    y_tr, y_te = Surv.from_arrays(tr_event, tr_time), Surv.from_arrays(event, time)
    tau = float(np.quantile(time, 0.8))
    ref = sksurv_metrics.concordance_index_ipcw(y_tr, y_te, pred, tau=tau)[0]
    assert uno_c_index(tr_time, tr_event, time, event, pred, tau=tau) == pytest.approx(ref, abs=1e-12)
    times = np.quantile(time[event], [0.2, 0.4, 0.6, 0.8])
    ref_auc, ref_mean = sksurv_metrics.cumulative_dynamic_auc(y_tr, y_te, pred, times)
    auc, mean = cumulative_dynamic_auc(tr_time, tr_event, time, event, pred, times)
    np.testing.assert_allclose(auc, ref_auc, atol=1e-12)
    assert mean == pytest.approx(ref_mean, abs=1e-12)
    surv = np.exp(-np.exp(pred)[:, None] * times[None, :])
    np.testing.assert_allclose(brier_score(tr_time, tr_event, time, event, surv, times)[1],
                               sksurv_metrics.brier_score(y_tr, y_te, surv, times)[1], atol=1e-12)
    assert integrated_brier_score(tr_time, tr_event, time, event, surv, times) == pytest.approx(
        sksurv_metrics.integrated_brier_score(y_tr, y_te, surv, times), abs=1e-12)


def test_kaplan_meier_and_logrank_equal_sksurv() -> None:
    time, event, pred = _data(5)
    knots, s = kaplan_meier(time, event)
    rk, rs = kaplan_meier_estimator(event, time)
    np.testing.assert_allclose(knots, rk)
    np.testing.assert_allclose(s, rs, atol=1e-12)
    group = np.digitize(pred, np.quantile(pred, [1 / 3, 2 / 3]))
    res = logrank_test(time, event, group)
    chisq, pval = compare_survival(Surv.from_arrays(event, time), group)
    assert res.statistic == pytest.approx(chisq, rel=1e-9)
    assert res.p_value == pytest.approx(pval, rel=1e-6)
    assert res.dof == 2
