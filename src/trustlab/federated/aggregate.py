"""Aggregation rules as pure functions over a stacked update matrix.

Every rule takes ``updates`` of shape ``(K, d)`` (one flattened client update ``Δ_k = θ_k − θ`` per row)
and returns an :class:`Aggregate`: the aggregated update, the effective per-client weights (summing to
1 over the clients that contributed, 0 for rejected clients) and an accept mask, so tests and logs can
see *who* was filtered. Rules are deterministic given their inputs (FLAME's noise takes a generator).

References (rule as implemented, with the code read for each):
    - FedAvg: McMahan et al., AISTATS 2017 (Flower ``aggregate``).
    - Coordinate median / trimmed mean: Yin et al., ICML 2018 (Flower ``fedmedian``/``fedtrimmedavg``).
    - Krum / Multi-Krum: Blanchard et al., NeurIPS 2017 (Flower ``multikrum.select_multikrum``).
    - FLAME: Nguyen et al., USENIX Security 2022 (clip median over *all* clients, zhmzm/FLAME#3).
    - FLTrust: Cao et al., NDSS 2021.
    - FoolsGold: Fung et al., RAID 2020 (FedML ``foolsgold_defense``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

__all__ = [
    "Aggregate",
    "bulyan",
    "cosine_matrix",
    "fedavg",
    "flame",
    "fltrust",
    "foolsgold",
    "foolsgold_weights",
    "krum",
    "krum_scores",
    "median",
    "multikrum",
    "pairwise_sq_distances",
    "trimmed_mean",
    "weighted_median",
    "weighted_trimmed_mean",
]


@dataclass
class Aggregate:
    """Result of an aggregation rule.

    Attributes:
        update: The aggregated update, shape ``(d,)``.
        weights: Effective weight of each client in ``update`` (``(K,)``, sums to 1 for weighted
            rules; for coordinate-wise rules the share of coordinates each client supplied).
        accepted: Boolean mask ``(K,)``: clients that contributed.
    """

    update: FloatArray
    weights: FloatArray
    accepted: NDArray[np.bool_]


def _check(updates: NDArray[np.floating]) -> FloatArray:
    u = np.asarray(updates, dtype=np.float64)
    if u.ndim != 2 or u.shape[0] == 0:
        raise ValueError(f"updates must have shape (K, d) with K >= 1, got {u.shape}")
    if not np.all(np.isfinite(u)):
        raise ValueError("updates contain non-finite values")
    return u


def _num_examples(num_examples: NDArray[np.floating] | list[float] | None, k: int) -> FloatArray:
    if num_examples is None:
        return np.ones(k)
    n = np.asarray(num_examples, dtype=np.float64)
    if n.shape != (k,) or np.any(n < 0) or n.sum() <= 0:
        raise ValueError(f"num_examples must be {k} non-negative numbers with a positive sum, got {n}")
    return n


def fedavg(updates: NDArray[np.floating], num_examples: NDArray[np.floating] | list[float] | None = None) -> Aggregate:
    """Weighted mean ``Σ n_k Δ_k / Σ n_k`` (McMahan et al., 2017).

    Args:
        updates: ``(K, d)`` client updates.
        num_examples: Local sample counts ``n_k`` (uniform when ``None``).
    """
    u = _check(updates)
    n = _num_examples(num_examples, u.shape[0])
    w = n / n.sum()
    return Aggregate(w @ u, w, n > 0)


def median(updates: NDArray[np.floating]) -> Aggregate:
    """Coordinate-wise median (Yin et al., 2018). All clients count as accepted."""
    u = _check(updates)
    k = u.shape[0]
    return Aggregate(np.median(u, axis=0), np.full(k, 1.0 / k), np.ones(k, dtype=bool))


def _check_weighted(
    updates: NDArray[np.floating], weights: NDArray[np.floating] | list[float]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.intp]]:
    """Validate ``(K, d)`` updates and ``(K,)`` non-negative weights; also return the per-coordinate sort order."""
    u = _check(updates)
    k = u.shape[0]
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (k,) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be {k} non-negative numbers with a positive sum, got {w}")
    return u, w, np.argsort(u, axis=0, kind="stable")


def weighted_median(updates: NDArray[np.floating], weights: NDArray[np.floating] | list[float]) -> Aggregate:
    """Coordinate-wise weighted median: per coordinate, the smallest value whose cumulative weight reaches half.

    With equal weights it is the lower median (``median`` averages the two middle values for even
    ``K``). Clients with weight 0 never supply a coordinate.

    Args:
        updates: ``(K, d)`` client updates.
        weights: ``(K,)`` non-negative weights with a positive sum.

    The returned ``weights`` are the share of coordinates each client supplied.
    """
    u, w, order = _check_weighted(updates, weights)
    k = u.shape[0]
    cum = np.cumsum(w[order], axis=0)
    pick = np.argmax(cum >= 0.5 * w.sum() - 1e-12, axis=0)  # first index reaching half the weight
    src = order[pick, np.arange(u.shape[1])]
    counts = np.bincount(src, minlength=k).astype(np.float64)
    return Aggregate(u[src, np.arange(u.shape[1])], counts / counts.sum(), w > 0)


def weighted_trimmed_mean(updates: NDArray[np.floating], weights: NDArray[np.floating] | list[float],
                          trim: float = 0.25) -> Aggregate:
    """Coordinate-wise weighted mean of the values in the central ``1 − 2·trim`` share of the weight.

    Per coordinate the values are sorted; each value occupies the interval of cumulative weight
    ``[c − w, c]`` and contributes the weight of its overlap with ``[trim·W, (1 − trim)·W]``. With
    ``trim → 0.5`` it tends to :func:`weighted_median`; with ``trim = 0`` it is the weighted mean.

    Args:
        updates: ``(K, d)`` client updates.
        weights: ``(K,)`` non-negative weights with a positive sum.
        trim: Share of the total weight cut at each end, ``0 <= trim < 0.5``.
    """
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    u, w, order = _check_weighted(updates, weights)
    k = u.shape[0]
    ws = w[order]
    hi = np.cumsum(ws, axis=0)
    lo = hi - ws
    total = w.sum()
    part = np.clip(np.minimum(hi, (1 - trim) * total) - np.maximum(lo, trim * total), 0.0, None)
    vals = np.take_along_axis(u, order, axis=0)
    upd = (part * vals).sum(axis=0) / part.sum(axis=0)
    share = np.zeros(k)
    np.add.at(share, order.ravel(), part.ravel())
    return Aggregate(upd, share / share.sum(), share > 0)


def trimmed_mean(updates: NDArray[np.floating], beta: float = 0.2) -> Aggregate:
    """Coordinate-wise mean after dropping the ``⌊βK⌋`` lowest and highest values (Yin et al., 2018).

    Args:
        updates: ``(K, d)`` client updates.
        beta: Fraction cut at *each* end, ``0 <= beta < 0.5`` (Flower's default 0.2).

    The returned ``weights`` are the share of coordinates in which each client was kept.
    """
    if not 0.0 <= beta < 0.5:
        raise ValueError(f"beta must be in [0, 0.5), got {beta}")
    u = _check(updates)
    k = u.shape[0]
    cut = int(np.floor(beta * k))
    if k - 2 * cut < 1:
        cut = (k - 1) // 2
    order = np.argsort(u, axis=0, kind="stable")
    kept = order[cut : k - cut]
    vals = np.take_along_axis(u, kept, axis=0)
    counts = np.bincount(kept.ravel(), minlength=k).astype(np.float64)
    return Aggregate(vals.mean(axis=0), counts / counts.sum(), counts > 0)


def pairwise_sq_distances(updates: NDArray[np.floating]) -> FloatArray:
    """``D[i, j] = ‖Δ_i − Δ_j‖²`` (exact, symmetric, zero diagonal)."""
    u = _check(updates)
    sq = np.einsum("ij,ij->i", u, u)
    d = sq[:, None] + sq[None, :] - 2.0 * (u @ u.T)
    d = np.maximum(d, 0.0)
    np.fill_diagonal(d, 0.0)
    return (d + d.T) / 2.0


def krum_scores(updates: NDArray[np.floating], num_malicious: int) -> FloatArray:
    """Krum score of each client: sum of squared distances to its ``K − f − 2`` nearest neighbours.

    Args:
        updates: ``(K, d)`` client updates.
        num_malicious: Assumed number of Byzantine clients ``f``.
    """
    u = _check(updates)
    k = u.shape[0]
    if num_malicious < 0:
        raise ValueError(f"num_malicious must be >= 0, got {num_malicious}")
    m = max(k - num_malicious - 2, 1)
    d = pairwise_sq_distances(u)
    out = np.empty(k)
    for i in range(k):
        others = np.sort(np.delete(d[i], i))
        out[i] = others[: min(m, k - 1)].sum()
    return out


def multikrum(updates: NDArray[np.floating], num_malicious: int, num_selected: int | None = None,
              num_examples: NDArray[np.floating] | list[float] | None = None) -> Aggregate:
    """Multi-Krum: average (weighted by ``n_k``) the ``m`` clients with the lowest Krum scores.

    Args:
        updates: ``(K, d)`` client updates.
        num_malicious: Assumed number ``f`` of Byzantine clients.
        num_selected: ``m``; defaults to ``K − f``. ``m = 1`` is Krum.
        num_examples: Sample counts for the final weighted mean (uniform when ``None``).
    """
    u = _check(updates)
    k = u.shape[0]
    m = k - num_malicious if num_selected is None else num_selected
    if not 1 <= m <= k:
        raise ValueError(f"num_selected must be in [1, {k}], got {m}")
    scores = krum_scores(u, num_malicious)
    sel = np.argsort(scores, kind="stable")[:m]
    acc = np.zeros(k, dtype=bool)
    acc[sel] = True
    n = _num_examples(num_examples, k) * acc
    if n.sum() <= 0:
        n = acc.astype(np.float64)
    w = n / n.sum()
    return Aggregate(w @ u, w, acc)


def krum(updates: NDArray[np.floating], num_malicious: int) -> Aggregate:
    """Krum (Blanchard et al., 2017): the single update with the lowest Krum score."""
    return multikrum(updates, num_malicious, num_selected=1)


def bulyan(updates: NDArray[np.floating], num_malicious: int) -> Aggregate:
    """Bulyan (El Mhamdi et al., ICML 2018), as Flower's ``Bulyan`` strategy computes it.

    1. Multi-Krum selects ``θ = K − 2f`` updates (lowest Krum scores, ``K − f − 2`` neighbours);
    2. per coordinate, the mean of the ``β = θ − 2f`` selected values closest to the selected
       values' coordinate-wise median.

    Needs ``K >= 4f + 3`` (raises ``ValueError`` otherwise; the strategy lowers ``f`` with a logged note).

    Args:
        updates: ``(K, d)`` client updates.
        num_malicious: Assumed number ``f`` of Byzantine clients.

    The returned ``weights`` are the share of coordinates each client supplied.
    """
    u = _check(updates)
    k = u.shape[0]
    if num_malicious < 0 or k < 4 * num_malicious + 3:
        raise ValueError(f"Bulyan needs K >= 4f + 3, got K={k}, f={num_malicious}")
    theta = k - 2 * num_malicious
    beta = theta - 2 * num_malicious
    sel = np.argsort(krum_scores(u, num_malicious), kind="stable")[:theta]
    s = u[sel]
    med = np.median(s, axis=0)
    idx = np.argpartition(np.abs(s - med), beta - 1, axis=0)[:beta]
    upd = np.take_along_axis(s, idx, axis=0).mean(axis=0)
    counts = np.zeros(k)
    np.add.at(counts, sel[idx.ravel()], 1.0)
    return Aggregate(upd, counts / counts.sum(), counts > 0)


def cosine_matrix(updates: NDArray[np.floating]) -> FloatArray:
    """Pairwise cosine similarity of the rows (a zero row has similarity 0 to everything)."""
    u = _check(updates)
    norms = np.linalg.norm(u, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    v = u / safe[:, None]
    c = np.clip(v @ v.T, -1.0, 1.0)
    return c


def flame(updates: NDArray[np.floating], noise_lambda: float = 0.001, generator: np.random.Generator | None = None,
          min_cluster_size: int | None = None) -> Aggregate:
    """FLAME (Nguyen et al., 2022): cluster, clip, average, add noise.

    1. Pairwise cosine distances; HDBSCAN (``min_cluster_size = K/2 + 1``, ``min_samples = 1``, single
       cluster allowed) keeps the largest cluster (all clients when HDBSCAN finds none).
    2. Clip every accepted update to ``S = median ‖Δ_k‖`` over **all** clients (zhmzm/FLAME#3).
    3. Average the clipped updates; add ``N(0, (λS)²)`` per coordinate (skipped when ``generator`` is
       ``None`` or ``noise_lambda == 0``).

    Args:
        updates: ``(K, d)`` client updates.
        noise_lambda: Noise level ``λ`` relative to the clip bound.
        generator: NumPy generator for the noise.
        min_cluster_size: Override of HDBSCAN's ``min_cluster_size``.
    """
    if noise_lambda < 0:
        raise ValueError(f"noise_lambda must be >= 0, got {noise_lambda}")
    u = _check(updates)
    acc = flame_filter(u, min_cluster_size)
    norms = np.linalg.norm(u, axis=1)
    s = float(np.median(norms))
    scale = np.minimum(1.0, s / np.maximum(norms, 1e-12))
    clipped = u * scale[:, None]
    w = acc.astype(np.float64) / acc.sum()
    agg = w @ clipped
    if generator is not None and noise_lambda > 0:
        agg = agg + generator.normal(0.0, noise_lambda * s, size=agg.shape)
    return Aggregate(agg, w * scale / max(float((w * scale).sum()), 1e-12), acc)


def flame_filter(updates: NDArray[np.floating], min_cluster_size: int | None = None) -> NDArray[np.bool_]:
    """FLAME's HDBSCAN step: boolean mask of the largest cluster under cosine distance."""
    u = _check(updates)
    k = u.shape[0]
    if k < 3:
        return np.ones(k, dtype=bool)
    from sklearn.cluster import HDBSCAN

    dist = np.clip(1.0 - cosine_matrix(u), 0.0, 2.0)
    mcs = min_cluster_size if min_cluster_size is not None else k // 2 + 1
    mcs = int(min(max(mcs, 2), k))
    labels = HDBSCAN(min_cluster_size=mcs, min_samples=1, metric="precomputed", allow_single_cluster=True,
                     copy=True).fit_predict(dist)
    valid = labels[labels >= 0]
    if valid.size == 0:
        return np.ones(k, dtype=bool)
    top = np.bincount(valid).argmax()
    return labels == top


def fltrust(updates: NDArray[np.floating], server_update: NDArray[np.floating]) -> Aggregate:
    """FLTrust (Cao et al., 2021): trust = ReLU(cos(Δ_k, g₀)); rescale to ‖g₀‖; trust-weighted mean.

    Args:
        updates: ``(K, d)`` client updates.
        server_update: ``g₀``, the update the server computes on its small root data set.
    """
    u = _check(updates)
    g0 = np.asarray(server_update, dtype=np.float64).ravel()
    if g0.shape[0] != u.shape[1]:
        raise ValueError(f"server_update has {g0.shape[0]} entries, updates have {u.shape[1]}")
    n0 = float(np.linalg.norm(g0))
    norms = np.linalg.norm(u, axis=1)
    cos = (u @ g0) / np.maximum(norms * n0, 1e-12)
    ts = np.maximum(cos, 0.0)
    k = u.shape[0]
    if ts.sum() <= 0:
        return Aggregate(np.zeros(u.shape[1]), np.zeros(k), np.zeros(k, dtype=bool))
    scaled = u * (n0 / np.maximum(norms, 1e-12))[:, None]
    w = ts / ts.sum()
    return Aggregate(w @ scaled, w, ts > 0)


def foolsgold_weights(history: NDArray[np.floating], kappa: float = 1.0, eps: float = 1e-5) -> FloatArray:
    """FoolsGold learning rates α_k from accumulated (historical) client updates (Fung et al., 2020).

    ``cs = cos(H)``, diagonal removed; ``v_i = max_j cs_ij``; pardoning ``cs_ij *= v_i / v_j`` when
    ``v_j > v_i``; ``α_i = 1 − max_j cs_ij`` clipped to [0, 1]; ``α /= max α``; logit
    ``α = κ (ln(α / (1 − α)) + 0.5)`` clipped to [0, 1].

    Args:
        history: ``(K, d)`` per-client sums of past updates (often of the output layer only).
        kappa: Logit confidence ``κ``.
        eps: Numerical guard.
    """
    h = _check(history)
    k = h.shape[0]
    if k == 1:
        return np.ones(1)
    cs = cosine_matrix(h)
    np.fill_diagonal(cs, -np.inf)
    v = cs.max(axis=1)
    cs_p = cs.copy()
    for i in range(k):
        for j in range(k):
            if i != j and v[j] > v[i]:
                cs_p[i, j] = cs[i, j] * v[i] / v[j]
    alpha = 1.0 - cs_p.max(axis=1)
    alpha = np.clip(alpha, 0.0, 1.0)
    if alpha.max() <= 0:
        return np.zeros(k)
    alpha = alpha / alpha.max()
    alpha = np.where(alpha >= 1.0, 1.0 - eps, alpha)
    with np.errstate(divide="ignore"):
        logit = kappa * (np.log(np.maximum(alpha, eps) / (1.0 - alpha)) + 0.5)
    logit = np.where(alpha <= 0, 0.0, logit)
    return np.clip(logit, 0.0, 1.0)


def foolsgold(updates: NDArray[np.floating], history: NDArray[np.floating], kappa: float = 1.0) -> Aggregate:
    """FoolsGold aggregation: ``Σ α_k Δ_k / Σ α_k`` with ``α`` from :func:`foolsgold_weights`.

    Args:
        updates: ``(K, d)`` this round's updates.
        history: ``(K, d')`` accumulated past updates of the same clients (including this round).
        kappa: Logit confidence.
    """
    u = _check(updates)
    if np.asarray(history).shape[0] != u.shape[0]:
        raise ValueError("history must have one row per client")
    a = foolsgold_weights(history, kappa)
    k = u.shape[0]
    if a.sum() <= 0:
        return Aggregate(np.zeros(u.shape[1]), np.zeros(k), np.zeros(k, dtype=bool))
    w = a / a.sum()
    return Aggregate(w @ u, w, a > 0)
