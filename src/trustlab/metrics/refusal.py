"""Refusal Index (RI) and the refusal/calibration metrics it is compared with.

Reference: Pan, Xu, Chen, Dong, Qin, Li, Yu, Jia, "Can LLMs Refuse Questions They Do Not Know?
Measuring Knowledge-Aware Refusal in Factual Tasks", ICLR 2026 (arXiv:2510.01782).

RI is the Spearman rank correlation between the per-question refusal probability ``r_i`` and
error probability ``w_i``. Both are latent in a standard (single-sample) evaluation, so the paper
estimates RI from **two passes**: pass 1 with a prompt that permits refusal gives the refusal
indicator ``R_i`` (and ``W_i`` for answered questions); pass 2 with a "must answer" prompt, run only
on the refused questions, gives ``W'_i``. The would-be-wrong indicator is
``Ŵ_i = R_i·W'_i + (1-R_i)·W_i``. (R, Ŵ) are modelled as thresholded standard bivariate normals
with correlation ρ (Gaussian copula / tetrachoric model); ρ̂ maximises the multinomial likelihood of
the 2×2 table with the thresholds at the empirical marginals, and
``RI = (6/π)·arcsin(ρ̂/2)`` (Pearson of a bivariate normal -> Spearman).

With the thresholds fixed at the empirical marginals the score equation is solved exactly by
``P(Z_R > τ_R, Z_W > τ_W; ρ) = n11/n`` (each cell then matches its empirical frequency), so the MLE
is a one-dimensional monotone root find (:func:`tetrachoric_rho`); :func:`tetrachoric_rho_mle`
maximises the likelihood numerically and is kept as a cross-check.

Everything here is a pure function of arrays/counts (NumPy/SciPy only).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

__all__ = [
    "RIEstimate",
    "accuracy",
    "accuracy_given_attempted",
    "auroc",
    "bvn_cdf",
    "bvn_upper",
    "direct_refusal_index",
    "expected_calibration_error",
    "iso_ri_accuracy",
    "pearson_to_spearman",
    "rankdata",
    "refusal_index",
    "refusal_index_from_counts",
    "refusal_index_from_rates",
    "refusal_rate",
    "simpleqa_f_score",
    "spearman",
    "spearman_to_pearson",
    "tetrachoric_rho",
    "tetrachoric_rho_mle",
    "two_pass_counts",
    "weighted_score",
]

_EPS_RHO = 1e-12


# --------------------------------------------------------------------------------------------------
# Rank correlation
# --------------------------------------------------------------------------------------------------
def rankdata(x: ArrayLike) -> NDArray[np.float64]:
    """Ranks 1..n with ties given their average rank (like ``scipy.stats.rankdata(method='average')``)."""
    a = np.asarray(x, dtype=float).ravel()
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    ranks = np.empty(a.size, dtype=float)
    # boundaries of runs of equal values
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_a) != 0) + 1]
    ends = np.r_[starts[1:], a.size]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based positions start+1..end
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's ρ: the Pearson correlation of average ranks. NaN when either input is constant.

    Raises:
        ValueError: the inputs differ in length or hold fewer than 2 values or non-finite values.
    """
    a = np.asarray(x, dtype=float).ravel()
    b = np.asarray(y, dtype=float).ravel()
    if a.size != b.size:
        raise ValueError(f"spearman needs equal lengths, got {a.size} and {b.size}")
    if a.size < 2:
        raise ValueError("spearman needs at least 2 values")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("spearman got non-finite values")
    ra = rankdata(a) - (a.size + 1) / 2.0
    rb = rankdata(b) - (b.size + 1) / 2.0
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float("nan") if den == 0.0 else float(ra @ rb) / den


def pearson_to_spearman(rho: ArrayLike) -> NDArray[np.float64] | float:
    """Spearman correlation of a bivariate normal with Pearson correlation ``rho``: ``(6/π)·asin(ρ/2)``."""
    out = 6.0 / np.pi * np.arcsin(np.asarray(rho, dtype=float) / 2.0)
    return float(out) if np.ndim(out) == 0 else out


def spearman_to_pearson(rs: ArrayLike) -> NDArray[np.float64] | float:
    """Inverse of :func:`pearson_to_spearman`: ``2·sin(π·ρ_S/6)``."""
    out = 2.0 * np.sin(np.pi * np.asarray(rs, dtype=float) / 6.0)
    return float(out) if np.ndim(out) == 0 else out


# --------------------------------------------------------------------------------------------------
# Bivariate normal probabilities (Owen's T formula; exact up to special-function accuracy)
# --------------------------------------------------------------------------------------------------
def bvn_cdf(h: ArrayLike, k: ArrayLike, rho: ArrayLike) -> NDArray[np.float64]:
    """``P(X <= h, Y <= k)`` for standard bivariate normal (X, Y) with correlation ``rho``.

    Uses Owen (1956): ``Φ₂ = ½Φ(h) + ½Φ(k) − T(h, a_h) − T(k, a_k) − β`` with Owen's T function
    (``scipy.special.owens_t``); ``rho = ±1`` are handled in closed form. Broadcasts its inputs.
    """
    h, k, r = np.broadcast_arrays(np.asarray(h, float), np.asarray(k, float), np.asarray(rho, float))
    h = h.astype(float).copy()
    k = k.astype(float).copy()
    r = np.clip(r.astype(float), -1.0, 1.0)
    out = np.empty(h.shape, dtype=float)
    hi = r >= 1.0 - _EPS_RHO
    lo = r <= -1.0 + _EPS_RHO
    mid = ~(hi | lo)
    out[hi] = special.ndtr(np.minimum(h[hi], k[hi]))
    out[lo] = np.maximum(0.0, special.ndtr(h[lo]) + special.ndtr(k[lo]) - 1.0)
    if np.any(mid):
        hm, km, rm = h[mid], k[mid], r[mid]
        # exact zeros make a_h/a_k 0/0; the function is continuous, so nudge them
        hm = np.where(hm == 0.0, 1e-300, hm)
        km = np.where(km == 0.0, 1e-300, km)
        s = np.sqrt((1.0 - rm) * (1.0 + rm))
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            ah = (km - rm * hm) / (hm * s)
            ak = (hm - rm * km) / (km * s)
        beta = np.where(np.sign(hm) == np.sign(km), 0.0, 0.5)
        val = 0.5 * special.ndtr(hm) + 0.5 * special.ndtr(km) - special.owens_t(hm, ah) - special.owens_t(km, ak) - beta
        out[mid] = np.clip(val, 0.0, np.minimum(special.ndtr(hm), special.ndtr(km)))
    return out


def bvn_upper(h: ArrayLike, k: ArrayLike, rho: ArrayLike) -> NDArray[np.float64]:
    """``P(X > h, Y > k)`` for a standard bivariate normal with correlation ``rho``."""
    return bvn_cdf(-np.asarray(h, float), -np.asarray(k, float), rho)


# --------------------------------------------------------------------------------------------------
# Two-pass counts and the tetrachoric (Gaussian-copula) estimator
# --------------------------------------------------------------------------------------------------
def two_pass_counts(
    refused: ArrayLike, wrong_pass1: ArrayLike, wrong_pass2: ArrayLike
) -> tuple[int, int, int, int]:
    """The 2×2 counts ``(n11, n10, n01, n00)`` of (R, Ŵ) from a two-pass evaluation.

    Args:
        refused: ``R_i`` (bool) from pass 1 (refusal permitted).
        wrong_pass1: ``W_i`` (bool) from pass 1; ignored where ``refused``.
        wrong_pass2: ``W'_i`` (bool) from pass 2 (forced answer); used only where ``refused``.

    Returns:
        ``n_ab = #{i: R_i = a, Ŵ_i = b}`` with ``Ŵ_i = R_i·W'_i + (1−R_i)·W_i``.
    """
    r = np.asarray(refused, dtype=bool).ravel()
    w1 = np.asarray(wrong_pass1, dtype=bool).ravel()
    w2 = np.asarray(wrong_pass2, dtype=bool).ravel()
    if not (r.size == w1.size == w2.size):
        raise ValueError(f"lengths differ: {r.size}, {w1.size}, {w2.size}")
    w = np.where(r, w2, w1)
    n11 = int(np.sum(r & w))
    n10 = int(np.sum(r & ~w))
    n01 = int(np.sum(~r & w))
    n00 = int(np.sum(~r & ~w))
    return n11, n10, n01, n00


def _rho_root(p11: NDArray[np.float64], tr: NDArray[np.float64], tw: NDArray[np.float64], iters: int = 64
              ) -> NDArray[np.float64]:
    """Vectorised bisection for ``bvn_upper(tr, tw, ρ) = p11`` on ρ ∈ [−1, 1] (monotone increasing)."""
    lo = np.full(p11.shape, -1.0)
    hi = np.full(p11.shape, 1.0)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        f = bvn_upper(tr, tw, mid) - p11
        up = f < 0
        lo = np.where(up, mid, lo)
        hi = np.where(up, hi, mid)
    return 0.5 * (lo + hi)


def _tetrachoric_batch(counts: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
    """ρ̂ for a batch of 2×2 tables ``counts[..., (n11, n10, n01, n00)]``.

    Returns:
        ``(rho, boundary, defined)``; ``rho`` is NaN where undefined (a marginal is 0 or 1).
    """
    c = np.asarray(counts, dtype=float).reshape(-1, 4)
    n = c.sum(axis=1)
    r = (c[:, 0] + c[:, 1]) / n
    mu = (c[:, 0] + c[:, 2]) / n
    p11 = c[:, 0] / n
    defined = (r > 0) & (r < 1) & (mu > 0) & (mu < 1)
    rho = np.full(c.shape[0], np.nan)
    boundary = np.zeros(c.shape[0], dtype=bool)
    if not np.any(defined):
        return rho, boundary, defined
    rr, mm, pp = r[defined], mu[defined], p11[defined]
    lower = np.maximum(0.0, rr + mm - 1.0)  # Fréchet bounds of p11 (ρ = −1 / +1)
    upper = np.minimum(rr, mm)
    tr = special.ndtri(1.0 - rr)
    tw = special.ndtri(1.0 - mm)
    est = _rho_root(pp, tr, tw)
    at_lo = pp <= lower + 1e-15
    at_hi = pp >= upper - 1e-15
    est = np.where(at_lo, -1.0, np.where(at_hi, 1.0, est))
    rho[defined] = est
    boundary[defined] = at_lo | at_hi
    return rho, boundary, defined


def tetrachoric_rho(n11: int, n10: int, n01: int, n00: int) -> tuple[float, bool]:
    """MLE of the latent correlation ρ of a 2×2 table under the thresholded bivariate normal.

    Returns:
        ``(rho, boundary)``; ``rho`` is ±1 with ``boundary=True`` when n11 sits on a Fréchet bound,
        NaN when a marginal rate is 0 or 1 (undefined).
    """
    rho, boundary, _ = _tetrachoric_batch(np.array([[n11, n10, n01, n00]]))
    return float(rho[0]), bool(boundary[0])


def _cells(rho: float, tr: float, tw: float, r: float, mu: float) -> NDArray[np.float64]:
    p11 = float(bvn_upper(tr, tw, rho))
    return np.array([p11, r - p11, mu - p11, 1.0 - r - mu + p11])


def tetrachoric_rho_mle(n11: int, n10: int, n01: int, n00: int) -> float:
    """ρ̂ by maximising ``Σ n_ab log p_ab(ρ)`` numerically (bounded scalar search); a cross-check of
    :func:`tetrachoric_rho`, which solves the score equation in closed form."""
    from scipy.optimize import minimize_scalar

    n = n11 + n10 + n01 + n00
    r, mu = (n11 + n10) / n, (n11 + n01) / n
    tr, tw = float(special.ndtri(1 - r)), float(special.ndtri(1 - mu))
    counts = np.array([n11, n10, n01, n00], dtype=float)

    def nll(rho: float) -> float:
        p = np.clip(_cells(rho, tr, tw, r, mu), 1e-300, 1.0)
        return -float(counts @ np.log(p))

    res = minimize_scalar(nll, bounds=(-0.999999, 0.999999), method="bounded", options={"xatol": 1e-10})
    return float(res.x)


@dataclass(frozen=True)
class RIEstimate:
    """A Refusal Index estimate.

    Attributes:
        ri: Estimated RI (Spearman), NaN when undefined.
        rho: Latent Pearson correlation ρ̂.
        ci_low: Lower percentile-bootstrap bound (NaN without bootstrap).
        ci_high: Upper percentile-bootstrap bound.
        n: Number of questions.
        refusal_rate: Pass-1 refusal rate r̂.
        error_rate: Would-be error rate μ̂ (pass-1 errors + pass-2 errors of refused questions).
        boundary: ρ̂ hit ±1 (n11 on a Fréchet bound): the estimate is unreliable.
        undefined_reason: Why RI is undefined (empty when defined).
        counts: ``(n11, n10, n01, n00)``.
        n_boot_valid: Bootstrap resamples in which RI was defined.
    """

    ri: float
    rho: float
    ci_low: float
    ci_high: float
    n: int
    refusal_rate: float
    error_rate: float
    boundary: bool
    undefined_reason: str
    counts: tuple[int, int, int, int]
    n_boot_valid: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy."""
        return asdict(self)


def refusal_index_from_counts(
    n11: int, n10: int, n01: int, n00: int, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> RIEstimate:
    """RI from the 2×2 two-pass counts, with a percentile bootstrap CI over questions.

    Resampling questions with replacement is a multinomial draw of the four cells, so the bootstrap
    is vectorised over resamples. Resamples in which RI is undefined (no refusals, ...) are dropped.

    Args:
        n11, n10, n01, n00: Counts of (refused, would-be-wrong) = (1,1), (1,0), (0,1), (0,0).
        n_boot: Bootstrap resamples (0 for none).
        ci: Two-sided confidence level in (0, 1).
        seed: Seed of the bootstrap generator.
    """
    counts = np.array([n11, n10, n01, n00], dtype=np.int64)
    if np.any(counts < 0):
        raise ValueError(f"counts must be non-negative, got {counts.tolist()}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    n = int(counts.sum())
    if n == 0:
        return RIEstimate(float("nan"), float("nan"), float("nan"), float("nan"), 0, float("nan"), float("nan"),
                          False, "no questions", (0, 0, 0, 0))
    r = (n11 + n10) / n
    mu = (n11 + n01) / n
    reason = ""
    if r == 0:
        reason = "no refusals in pass 1: use a prompt that permits refusal"
    elif r == 1:
        reason = "every question was refused in pass 1"
    elif mu == 0:
        reason = "no would-be errors: every (forced) answer is correct"
    elif mu == 1:
        reason = "every (forced) answer is wrong"
    rho, boundary = tetrachoric_rho(n11, n10, n01, n00)
    ri = float(pearson_to_spearman(rho)) if not reason else float("nan")
    lo = hi = float("nan")
    valid = 0
    if n_boot > 0 and not reason:
        rng = np.random.default_rng(seed)
        boot = rng.multinomial(n, counts / n, size=n_boot)
        brho, _, ok = _tetrachoric_batch(boot)
        bri = np.asarray(pearson_to_spearman(brho[ok]))
        valid = int(ok.sum())
        if valid:
            a = (1.0 - ci) / 2.0
            lo, hi = (float(v) for v in np.quantile(bri, [a, 1.0 - a]))
    return RIEstimate(ri, rho, lo, hi, n, r, mu, boundary, reason, (n11, n10, n01, n00), valid)


def refusal_index(
    refused: ArrayLike,
    would_be_wrong: ArrayLike,
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> RIEstimate:
    """Two-pass RI estimate from per-question indicators ``R_i`` and ``Ŵ_i`` (see :func:`two_pass_counts`)."""
    r = np.asarray(refused, dtype=bool).ravel()
    w = np.asarray(would_be_wrong, dtype=bool).ravel()
    if r.size != w.size:
        raise ValueError(f"lengths differ: {r.size} and {w.size}")
    return refusal_index_from_counts(
        int(np.sum(r & w)), int(np.sum(r & ~w)), int(np.sum(~r & w)), int(np.sum(~r & ~w)),
        n_boot=n_boot, ci=ci, seed=seed,
    )


def refusal_index_from_rates(refusal_rate: float, accuracy: float, error_rate: float) -> float:
    """RI from three aggregate rates of a two-pass evaluation.

    ``n00/n`` is the pass-1 accuracy ``c`` (answered and correct), so ``n11/n = c + r + μ − 1``:
    RI depends only on the pass-1 refusal rate ``r``, the pass-1 accuracy ``c`` and the would-be
    error rate ``μ`` (the abstract's "from observed refusal rates across two standard runs").
    """
    p11 = accuracy + refusal_rate + error_rate - 1.0
    n = 10**9  # rates -> a table with negligible rounding
    c = np.array([p11, refusal_rate - p11, error_rate - p11, 1.0 - refusal_rate - error_rate + p11]) * n
    if np.any(c < -1e-6 * n):
        raise ValueError("rates are inconsistent (a 2×2 cell would be negative)")
    rho, _, ok = _tetrachoric_batch(np.clip(np.round(c), 0, None).astype(np.int64)[None, :])
    return float(pearson_to_spearman(rho[0])) if ok[0] else float("nan")


def direct_refusal_index(refusal_freq: ArrayLike, error_freq: ArrayLike) -> float:
    """The direct RI when many samples per question exist: Spearman of per-question refusal
    frequency and error frequency (the paper's definition applied to empirical probabilities)."""
    return spearman(refusal_freq, error_freq)


def iso_ri_accuracy(refusal_rate: ArrayLike, error_rate: float, ri: float) -> NDArray[np.float64]:
    """Pass-1 accuracy implied by (refusal rate, would-be error rate, RI): the iso-RI curve.

    ``c(r) = Φ₂(Φ⁻¹(1−r), Φ⁻¹(1−μ); ρ)`` with ``ρ = 2 sin(π·RI/6)``; ``c(0) = 1−μ``, ``c(1) = 0``.
    """
    r = np.clip(np.asarray(refusal_rate, float), 1e-12, 1 - 1e-12)
    rho = float(spearman_to_pearson(ri))
    return bvn_cdf(special.ndtri(1.0 - r), special.ndtri(1.0 - error_rate), rho)


# --------------------------------------------------------------------------------------------------
# Baseline metrics the paper argues against (SimpleQA-style and calibration)
# --------------------------------------------------------------------------------------------------
def refusal_rate(refused: ArrayLike) -> float:
    """Fraction of questions refused (SimpleQA ``is_not_attempted``)."""
    r = np.asarray(refused, dtype=bool)
    return float(r.mean()) if r.size else float("nan")


def accuracy(correct: ArrayLike) -> float:
    """Fraction of all questions answered correctly (refusals count as not correct)."""
    c = np.asarray(correct, dtype=bool)
    return float(c.mean()) if c.size else float("nan")


def accuracy_given_attempted(n_correct: float, n_incorrect: float) -> float:
    """C/A: ``correct / (correct + incorrect)`` (simple-evals ``accuracy_given_attempted``); NaN if none attempted."""
    att = n_correct + n_incorrect
    return float(n_correct / att) if att > 0 else float("nan")


def simpleqa_f_score(correct_rate: float, cga: float) -> float:
    """SimpleQA's F-score: harmonic mean of overall accuracy and C/A, ``2·c·cga / (c + cga)``."""
    if not (math.isfinite(cga) and math.isfinite(correct_rate)) or correct_rate + cga == 0:
        return 0.0 if math.isfinite(cga) else float("nan")
    return float(2.0 * cga * correct_rate / (cga + correct_rate))


def weighted_score(correct_rate: float, incorrect_rate: float, penalty: float = 1.0) -> float:
    """Penalised "reliability" score ``correct − penalty·incorrect`` (per question; refusals score 0).

    The paper's exact "Weighted" weights are not available to us; ``penalty=1`` is our choice.
    """
    if penalty < 0:
        raise ValueError(f"penalty must be >= 0, got {penalty}")
    return float(correct_rate - penalty * incorrect_rate)


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann–Whitney U with tie handling).

    NaN when only one class is present.
    """
    s = np.asarray(scores, dtype=float).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if s.size != y.size:
        raise ValueError(f"lengths differ: {s.size} and {y.size}")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def expected_calibration_error(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 10) -> float:
    """ECE with ``n_bins`` equal-width bins on [0, 1]: ``Σ_b (|B_b|/n)·|acc(B_b) − conf(B_b)|``.

    Bin edges follow torchmetrics' binary calibration error (right-closed bins, first bin ``[0, 1/n_bins]``).
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p = np.asarray(confidence, dtype=float).ravel()
    c = np.asarray(correct, dtype=float).ravel()
    if p.size != c.size:
        raise ValueError(f"lengths differ: {p.size} and {c.size}")
    if p.size == 0:
        return float("nan")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("confidence must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="left") - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            total += m.sum() / p.size * abs(c[m].mean() - p[m].mean())
    return float(total)
