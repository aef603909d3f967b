"""Pure functions of ICFNet: time discretisation, discrete-time survival likelihoods (plain and
balanced NLL), the Cox partial likelihood, unbalanced Sinkhorn optimal transport and the
orthogonality penalty.

References:
    Zhang et al., "ICFNet: Integrated Cross-modal Fusion Network for Survival Prediction",
    arXiv:2501.02778 (2025) -- balanced NLL, residual orthogonal decomposition.
    Zadeh & Schmid, "Bias in cross-entropy-based training of deep survival networks", TPAMI 2020 --
    the discrete-time NLL (as coded in MCAT/PORPOISE/MOTCat).
    Chizat et al., "Scaling algorithms for unbalanced optimal transport problems", Math. Comp. 2018;
    Xu & Chen, "Multimodal Optimal Transport-based Co-Attention Transformer" (MOTCat), ICCV 2023.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "balanced_nll_loss",
    "cox_ph_loss",
    "discretize",
    "fit_time_bins",
    "hazards_to_survival",
    "nll_loss",
    "orthogonality_loss",
    "risk_from_logits",
    "sinkhorn_unbalanced",
]

_EPS = 1e-7


def fit_time_bins(time: np.ndarray, event: np.ndarray, n_bins: int = 4) -> np.ndarray:
    """Cut points of ``n_bins`` time bins: quantiles of the *uncensored* times (fit on training data only).

    Returns:
        ``n_bins - 1`` increasing interior cut points (the outer edges are 0 and +inf).
    """
    if n_bins < 2:
        raise ValueError("n_bins must be >= 2")
    t = np.asarray(time, float)[np.asarray(event, bool)]
    if t.size < n_bins:
        t = np.asarray(time, float)
    cuts = np.quantile(t, np.linspace(0, 1, n_bins + 1)[1:-1])
    cuts = np.maximum.accumulate(cuts + np.arange(cuts.size) * 1e-9)
    return cuts


def discretize(time: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Bin index in ``0..len(cuts)`` of each time (left-closed bins, like ``pd.cut(right=False)``)."""
    return np.searchsorted(cuts, np.asarray(time, float), side="right").astype(np.int64)


def hazards_to_survival(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Hazards ``h_k = sigmoid(logit_k)`` and survival ``S_k = prod_{j<=k} (1 - h_j)``."""
    h = torch.sigmoid(logits)
    return h, torch.cumprod(1.0 - h, dim=-1)


def risk_from_logits(logits: Tensor) -> Tensor:
    """ICFNet's risk score ``-sum_k S_k`` (higher = earlier event)."""
    return -hazards_to_survival(logits)[1].sum(-1)


def _gather(x: Tensor, idx: Tensor) -> Tensor:
    return torch.gather(x, 1, idx.clamp(min=0).unsqueeze(1)).squeeze(1)


def nll_loss(logits: Tensor, y: Tensor, c: Tensor, alpha: float = 0.0) -> Tensor:
    """Discrete-time survival NLL (Zadeh & Schmid 2020), mean over patients.

    ``L_unc = -(1-c)[log S_{y-1} + log h_y]``, ``L_cen = -c log S_y`` with ``S_{-1} = 1``;
    ``L = (1-alpha)(L_unc + L_cen) + alpha L_unc``.

    Args:
        logits: (B, K) hazard logits.
        y: (B,) bin index of the observed time.
        c: (B,) censorship (1 = censored).
        alpha: Extra weight on uncensored patients (0 = exact likelihood).
    """
    h, s = hazards_to_survival(logits)
    c = c.float()
    s_pad = torch.cat([torch.ones_like(s[:, :1]), s], dim=1)  # s_pad[k] = S_{k-1}
    s_prev = _gather(s_pad, y)
    s_this = _gather(s_pad, y + 1)
    h_this = _gather(h, y)
    unc = -(1 - c) * (torch.log(s_prev.clamp(min=_EPS)) + torch.log(h_this.clamp(min=_EPS)))
    cen = -c * torch.log(s_this.clamp(min=_EPS))
    return ((1 - alpha) * (unc + cen) + alpha * unc).mean()


def balanced_nll_loss(logits: Tensor, y: Tensor, c: Tensor, alpha: float = 0.0, beta: float = 1.0) -> Tensor:
    """ICFNet's balanced NLL: every patient's likelihood padded to K factors.

    Uncensored: ``-[log S_{y-1} + (K-1-y) log(1 - h_{y-1}) + log h_y]`` with ``h_{-1} := 0``;
    censored: ``-[log S_y + (K-1-y) log(1 - h_y)]``. The padding repeats the last survival factor
    (for uncensored patients that of the *previous* bin, as in the official code).
    ``L_bal = (1-alpha)(bal_unc + bal_cen) + alpha unc``; the loss is
    ``mean[(1-beta) L_NLL + beta L_bal]`` (the code's defaults: alpha = 0, beta = 1).

    Args:
        logits: (B, K) hazard logits.
        y: (B,) bin index.
        c: (B,) censorship (1 = censored).
        alpha: Extra weight on uncensored patients.
        beta: Mix between the plain NLL (0) and the balanced term (1).
    """
    k = logits.shape[1]
    h, s = hazards_to_survival(logits)
    c = c.float()
    yf = y.float()
    pad = (k - 1 - yf).clamp(min=0)
    s_pad = torch.cat([torch.ones_like(s[:, :1]), s], dim=1)
    h_pad = torch.cat([torch.zeros_like(h[:, :1]), h], dim=1)  # h_pad[k] = h_{k-1}
    log_s_prev = torch.log(_gather(s_pad, y).clamp(min=_EPS))
    log_s_this = torch.log(_gather(s_pad, y + 1).clamp(min=_EPS))
    log_h = torch.log(_gather(h, y).clamp(min=_EPS))
    log_1m_hprev = torch.log((1 - _gather(h_pad, y)).clamp(min=_EPS))
    log_1m_h = torch.log((1 - _gather(h, y)).clamp(min=_EPS))
    unc = -(1 - c) * (log_s_prev + log_h)
    cen = -c * log_s_this
    bal_unc = -(1 - c) * (log_s_prev + pad * log_1m_hprev + log_h)
    bal_cen = -c * (log_s_this + pad * log_1m_h)
    plain = (1 - alpha) * (unc + cen) + alpha * unc
    bal = (1 - alpha) * (bal_unc + bal_cen) + alpha * unc
    return ((1 - beta) * plain + beta * bal).mean()


def cox_ph_loss(risk: Tensor, time: Tensor, event: Tensor) -> Tensor:
    """Negative Cox partial log-likelihood (Breslow ties), mean over events (DeepSurv's loss).

    Args:
        risk: (B,) log-risk.
        time: (B,) observed times.
        event: (B,) 1 where the event was observed.
    """
    event = event.float()
    if event.sum() == 0:
        return risk.sum() * 0.0
    order = torch.argsort(time, descending=True)
    r, e, t = risk[order], event[order], time[order]
    log_cum = torch.logcumsumexp(r, dim=0)
    # Breslow: the risk set of tied times includes every sample with t_j >= t_i
    _, inverse, counts = torch.unique_consecutive(t, return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0) - 1
    log_risk_set = log_cum[last[inverse]]
    return -((r - log_risk_set) * e).sum() / e.sum()


def sinkhorn_unbalanced(
    cost: Tensor, a: Tensor, b: Tensor, reg: float = 0.1, reg_m: float = 0.5, n_iter: int = 100,
    tol: float = 0.0,
) -> Tensor:
    """Batched entropic *unbalanced* OT plan (KL-relaxed marginals), Sinkhorn-Knopp scaling.

    The iteration of POT's ``ot.unbalanced.sinkhorn_knopp_unbalanced`` as the official code called it
    (POT < 0.9.4: entropy regulariser ``K = exp(-C / reg)``, i.e. ``reg_type="entropy"`` in newer POT;
    ``u = (a / K v)^f``, ``v = (b / K^T u)^f`` with ``f = reg_m / (reg_m + reg)``, init ``u = 1/n, v = 1/m``).
    With ``tol > 0`` it stops at POT's criterion (mean of the relative sup-changes of ``u`` and ``v``
    below ``tol``, for every problem of the batch); the official call used POT's defaults
    (``numItermax=1000, stopThr=1e-6``), i.e. ``n_iter=1000, tol=1e-6``. The converged plan does not
    depend on the initialisation, so it equals POT's.

    Args:
        cost: (B, n, m) cost matrices.
        a: (B, n) source masses (0 for padded rows).
        b: (B, m) target masses.
        reg: Entropic regularisation.
        reg_m: Marginal relaxation (KL weight).
        n_iter: Iterations (the maximum when ``tol > 0``).
        tol: Stopping threshold (0 = run all ``n_iter`` iterations).

    Returns:
        (B, n, m) transport plans.
    """
    if reg <= 0 or reg_m <= 0:
        raise ValueError("reg and reg_m must be > 0")
    kmat = torch.exp(-cost / reg)
    f = reg_m / (reg_m + reg)
    u = torch.ones_like(a) / a.shape[1]
    v = torch.ones_like(b) / b.shape[1]
    for _ in range(n_iter):
        u_prev, v_prev = u, v
        kv = (kmat * v.unsqueeze(1)).sum(2)
        u = (a / kv.clamp(min=1e-30)).pow(f)
        ktu = (kmat * u.unsqueeze(2)).sum(1)
        v = (b / ktu.clamp(min=1e-30)).pow(f)
        if tol > 0:
            err_u = (u - u_prev).abs().amax(1) / torch.maximum(u.abs().amax(1), u_prev.abs().amax(1)).clamp(min=1.0)
            err_v = (v - v_prev).abs().amax(1) / torch.maximum(v.abs().amax(1), v_prev.abs().amax(1)).clamp(min=1.0)
            if float((0.5 * (err_u + err_v)).max()) < tol:
                break
    return u.unsqueeze(2) * kmat * v.unsqueeze(1)


def orthogonality_loss(residual: Tensor, guided: list[Tensor]) -> Tensor:
    """ROD penalty ``sum_m mean_i |cos(f'_{p,m}, o)|`` (each term in [0, 1])."""
    if not guided:
        return residual.sum() * 0.0
    return sum(F.cosine_similarity(g, residual, dim=-1, eps=1e-8).abs().mean() for g in guided)
