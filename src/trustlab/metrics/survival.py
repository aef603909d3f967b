"""Survival metrics as pure NumPy functions: Harrell's and Uno's C-index, cumulative/dynamic AUC,
(integrated) Brier score, Kaplan-Meier and the log-rank test.

Conventions follow scikit-survival (the reference implementation the tests cross-check against):
``event`` is boolean (True = event observed, False = right-censored), ``risk`` is a score where
*higher means an earlier event*, and survival predictions are probabilities ``S(t | x)``.

References:
    Harrell et al., "Evaluating the yield of medical tests", JAMA 1982.
    Uno et al., "On the C-statistics for evaluating overall adequacy of risk prediction procedures
    with censored survival data", Statistics in Medicine 2011.
    Uno et al., "Evaluating prediction rules for t-year survivors with censored regression models",
    JASA 2007 (cumulative/dynamic AUC with IPCW).
    Graf et al., "Assessment and comparison of prognostic classification schemes for survival data",
    Statistics in Medicine 1999 (IPCW Brier score).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "LogRankResult",
    "brier_score",
    "censoring_survival",
    "cumulative_dynamic_auc",
    "harrell_c_index",
    "integrated_brier_score",
    "kaplan_meier",
    "logrank_test",
    "step_eval",
    "uno_c_index",
]


def _as_arrays(time: ArrayLike, event: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    t = np.asarray(time, dtype=float).ravel()
    e = np.asarray(event).ravel()
    if e.dtype != bool:
        if not np.isin(e, (0, 1)).all():
            raise ValueError("event must be boolean or 0/1")
        e = e.astype(bool)
    if t.shape != e.shape:
        raise ValueError(f"time and event have different lengths ({t.size} vs {e.size})")
    if not np.isfinite(t).all():
        raise ValueError("time contains non-finite values")
    return t, e


def _weighted_concordance(
    time: NDArray[np.float64], event: NDArray[np.bool_], risk: NDArray[np.float64],
    weights: NDArray[np.float64], tied_tol: float,
) -> float:
    """Weighted concordance over comparable pairs (i had an event, j outlived i, or j censored at t_i).

    A pair (i, j) is comparable when ``event_i`` and (``t_j > t_i`` or ``t_j == t_i`` and j censored).
    It is concordant when ``risk_i > risk_j``; risk ties (``|Δ| <= tied_tol``) count one half.
    Each pair is weighted by ``weights[i]``.
    """
    n = time.size
    if n < 2:
        raise ValueError("need at least two samples")
    num = 0.0
    den = 0.0
    for i in np.flatnonzero(event):
        comparable = (time > time[i]) | ((time == time[i]) & ~event)
        if not comparable.any():
            continue
        r = risk[comparable]
        ties = np.abs(r - risk[i]) <= tied_tol
        conc = (r < risk[i]) & ~ties
        num += weights[i] * (conc.sum() + 0.5 * ties.sum())
        den += weights[i] * comparable.sum()
    if den == 0:
        raise ValueError("no comparable pairs: need at least one event before another sample's time")
    return float(num / den)


def harrell_c_index(time: ArrayLike, event: ArrayLike, risk: ArrayLike, tied_tol: float = 1e-8) -> float:
    """Harrell's concordance index (identical to ``sksurv.metrics.concordance_index_censored``).

    Args:
        time: Observed times, shape (n,).
        event: True where the event was observed.
        risk: Predicted risk (higher = earlier event).
        tied_tol: Risks closer than this count as ties (one half).

    Returns:
        The C-index in [0, 1].

    Example:
        >>> harrell_c_index([1, 2, 3], [True, True, False], [3.0, 2.0, 1.0])
        1.0
    """
    t, e = _as_arrays(time, event)
    r = np.asarray(risk, dtype=float).ravel()
    if r.shape != t.shape:
        raise ValueError(f"risk has {r.size} values for {t.size} samples")
    if not e.any():
        raise ValueError("all samples are censored")
    return _weighted_concordance(t, e, r, np.ones_like(t), tied_tol)


def kaplan_meier(time: ArrayLike, event: ArrayLike, reverse: bool = False) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Kaplan-Meier estimate at the unique observed times.

    Args:
        time: Observed times.
        event: Event indicators.
        reverse: Estimate the *censoring* distribution G instead (events and censorings swap roles;
            at tied times, events leave the risk set before censorings, as in scikit-survival).

    Returns:
        (unique_times, survival) with a right-continuous step function: ``S(t)`` for ``t`` in
        ``[unique_times[k], unique_times[k+1])`` is ``survival[k]``.
    """
    t, e = _as_arrays(time, event)
    uniq, inv = np.unique(t, return_inverse=True)
    n_total = np.bincount(inv, minlength=uniq.size)
    n_event = np.bincount(inv, weights=e.astype(float), minlength=uniq.size)
    at_risk = t.size - np.concatenate(([0], np.cumsum(n_total)[:-1]))
    if reverse:
        at_risk = at_risk - n_event
        n_event = n_total - n_event
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(n_event > 0, n_event / np.maximum(at_risk, 1), 0.0)
    return uniq.astype(float), np.cumprod(1.0 - ratio)


def step_eval(knots: NDArray[np.float64], values: NDArray[np.float64], at: ArrayLike, before: float = 1.0) -> NDArray[np.float64]:
    """Evaluate a right-continuous step function (value ``before`` left of the first knot)."""
    a = np.asarray(at, dtype=float)
    idx = np.searchsorted(knots, a, side="right") - 1
    full = np.concatenate(([before], values))
    return full[idx + 1]


def censoring_survival(train_time: ArrayLike, train_event: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Kaplan-Meier estimate of the censoring survival G(t) = P(C > t) from training data."""
    t, e = _as_arrays(train_time, train_event)
    if e.all():
        u = np.unique(t)
        return u, np.ones_like(u)
    return kaplan_meier(t, e, reverse=True)


def _ipcw(train_time: ArrayLike, train_event: ArrayLike, time: NDArray[np.float64], event: NDArray[np.bool_]) -> NDArray[np.float64]:
    """1 / G(t_i) for test samples with an event (0 for censored ones)."""
    knots, g = censoring_survival(train_time, train_event)
    if time.max() > knots.max() and g[-1] > 0:
        raise ValueError(f"test times exceed the largest training time {knots.max()}: restrict tau/times")
    gi = step_eval(knots, g, time[event])
    if (gi <= 0).any():
        raise ValueError("censoring survival is zero at an event time; restrict tau")
    w = np.zeros(time.size)
    w[event] = 1.0 / gi
    return w


def uno_c_index(
    train_time: ArrayLike, train_event: ArrayLike, time: ArrayLike, event: ArrayLike, risk: ArrayLike,
    tau: float | None = None, tied_tol: float = 1e-8,
) -> float:
    """Uno's IPCW C-index (matches ``sksurv.metrics.concordance_index_ipcw``).

    Pairs anchored at an event i get weight ``1 / G(t_i)^2``; with ``tau`` only events before tau count.

    Args:
        train_time: Training times (to estimate the censoring distribution G).
        train_event: Training event indicators.
        time: Test times.
        event: Test event indicators.
        risk: Test risks (higher = earlier event).
        tau: Truncation time (None = no truncation).
        tied_tol: Risk tie tolerance.
    """
    t, e = _as_arrays(time, event)
    r = np.asarray(risk, dtype=float).ravel()
    if r.shape != t.shape:
        raise ValueError(f"risk has {r.size} values for {t.size} samples")
    mask = np.ones(t.size, bool) if tau is None else t < tau
    w = np.zeros(t.size)
    w[mask] = _ipcw(train_time, train_event, t[mask], e[mask])
    return _weighted_concordance(t, e, r, w ** 2, tied_tol)


def cumulative_dynamic_auc(
    train_time: ArrayLike, train_event: ArrayLike, time: ArrayLike, event: ArrayLike, risk: ArrayLike,
    times: ArrayLike, tied_tol: float = 1e-8,
) -> tuple[NDArray[np.float64], float]:
    """Cumulative/dynamic time-dependent AUC with IPCW (matches ``sksurv.metrics.cumulative_dynamic_auc``).

    Cases at t: ``t_i <= t`` with an event, weighted by ``1/G(t_i)``; controls: ``t_j > t``.
    AUC(t) = weighted fraction of (case, control) pairs with ``risk_case > risk_control`` (ties 1/2).

    Args:
        train_time: Training times (censoring distribution).
        train_event: Training event indicators.
        time: Test times.
        event: Test event indicators.
        risk: Test risks, shape (n,) or (n, len(times)) for time-dependent risks.
        times: Evaluation times inside the test follow-up.
        tied_tol: Risk tie tolerance.

    Returns:
        (auc per time, mean AUC weighted by the KM drop of the test data).
    """
    t, e = _as_arrays(time, event)
    ts = np.unique(np.atleast_1d(np.asarray(times, dtype=float)))
    if ts.max() >= t.max() or ts.min() < t.min():
        raise ValueError(f"times must lie within the test follow-up [{t.min()}, {t.max()})")
    r = np.asarray(risk, dtype=float)
    if r.ndim == 1:
        r = np.repeat(r[:, None], ts.size, axis=1)
    if r.shape != (t.size, ts.size):
        raise ValueError(f"risk must have shape ({t.size},) or ({t.size}, {ts.size})")
    w = _ipcw(train_time, train_event, t, e)
    scores = np.empty(ts.size)
    for k, tk in enumerate(ts):
        cases = (t <= tk) & e
        controls = t > tk
        if not cases.any() or not controls.any():
            scores[k] = np.nan
            continue
        rc = r[cases, k][:, None]
        rn = r[controls, k][None, :]
        diff = rc - rn
        ties = np.abs(diff) <= tied_tol
        s = np.where(ties, 0.5, (diff > 0).astype(float))
        scores[k] = float((w[cases][:, None] * s).sum() / (w[cases].sum() * controls.sum()))
    if ts.size == 1:
        return scores, float(scores[0])
    knots, s_km = kaplan_meier(t, e)
    s_t = step_eval(knots, s_km, ts)
    d = -np.diff(np.concatenate(([1.0], s_t)))
    return scores, float((scores * d).sum() / (1.0 - s_t[-1]))


def brier_score(
    train_time: ArrayLike, train_event: ArrayLike, time: ArrayLike, event: ArrayLike, surv: ArrayLike, times: ArrayLike,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """IPCW Brier score of predicted survival probabilities (matches ``sksurv.metrics.brier_score``).

    Args:
        train_time: Training times (censoring distribution).
        train_event: Training event indicators.
        time: Test times.
        event: Test event indicators.
        surv: Predicted ``S(times[k] | x_i)``, shape (n, len(times)).
        times: Evaluation times (increasing, inside the test follow-up).

    Returns:
        (times, Brier score per time).
    """
    t, e = _as_arrays(time, event)
    ts = np.asarray(times, dtype=float).ravel()
    s = np.asarray(surv, dtype=float).reshape(t.size, ts.size)
    knots, g = censoring_survival(train_time, train_event)
    g_t = step_eval(knots, g, ts)
    g_y = step_eval(knots, g, t)
    g_t[g_t == 0] = np.inf
    g_y[g_y == 0] = np.inf
    out = np.empty(ts.size)
    for k, tk in enumerate(ts):
        case = (t <= tk) & e
        control = t > tk
        out[k] = np.mean(s[:, k] ** 2 * case / g_y + (1.0 - s[:, k]) ** 2 * control / g_t[k])
    return ts, out


def integrated_brier_score(
    train_time: ArrayLike, train_event: ArrayLike, time: ArrayLike, event: ArrayLike, surv: ArrayLike, times: ArrayLike,
) -> float:
    """Integrated Brier score: trapezoid rule over ``times`` divided by the time range (sksurv's definition)."""
    ts, bs = brier_score(train_time, train_event, time, event, surv, times)
    if ts.size < 2:
        raise ValueError("need at least two time points")
    return float(np.trapezoid(bs, ts) / (ts[-1] - ts[0]))


@dataclass(frozen=True)
class LogRankResult:
    """Result of a k-group log-rank test.

    Attributes:
        statistic: Chi-square statistic.
        dof: Degrees of freedom (groups - 1).
        p_value: Upper-tail chi-square probability.
    """

    statistic: float
    dof: int
    p_value: float


def logrank_test(time: ArrayLike, event: ArrayLike, group: ArrayLike) -> LogRankResult:
    """k-sample log-rank test (Mantel-Haenszel; matches ``sksurv.compare.compare_survival``).

    Args:
        time: Observed times.
        event: Event indicators.
        group: Group label per sample (at least two distinct groups).
    """
    from scipy.stats import chi2

    t, e = _as_arrays(time, event)
    g = np.asarray(group).ravel()
    labels = np.unique(g)
    if labels.size < 2:
        raise ValueError("log-rank test needs at least two groups")
    uniq = np.unique(t[e])
    k = labels.size
    obs_minus_exp = np.zeros(k)
    cov = np.zeros((k, k))
    for tk in uniq:
        at_risk = t >= tk
        n = at_risk.sum()
        d = (e & (t == tk)).sum()
        n_g = np.array([(at_risk & (g == lab)).sum() for lab in labels], dtype=float)
        d_g = np.array([(e & (t == tk) & (g == lab)).sum() for lab in labels], dtype=float)
        obs_minus_exp += d_g - d * n_g / n
        if n > 1:
            f = d * (n - d) / (n * n * (n - 1))
            cov += f * (n * np.diag(n_g) - np.outer(n_g, n_g))
    # drop the last group (the covariance is singular); chi2 with k-1 dof
    z = obs_minus_exp[:-1]
    v = cov[:-1, :-1]
    stat = float(z @ np.linalg.pinv(v) @ z)
    return LogRankResult(statistic=stat, dof=k - 1, p_value=float(chi2.sf(stat, k - 1)))
