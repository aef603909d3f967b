"""Scoring an extracted encoder against the victim *and* against the text prior.

A surrogate that returns the node-text embedding unchanged (the "text prior") already agrees with a
victim that was pretrained on text embeddings; what an attack *extracts* is what it adds on top. So
every score here is reported next to the text prior's and as a paired gain with a 95 % percentile
bootstrap interval over the evaluation nodes (``fid_gain``, ``cos_gain``; ``*_lo`` / ``*_hi``).
Across seeds, :func:`seed_interval` gives a t interval of the per-seed values.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from trustlab.utils.seed import make_generator


def zero_shot(emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """``argmax_c cos(emb_v, class_emb_c)`` -> ``(N,)`` long."""
    return (F.normalize(emb, dim=-1) @ F.normalize(class_emb, dim=-1).T).argmax(dim=-1)


def paired_bootstrap(a: torch.Tensor, b: torch.Tensor, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` (per-node values, paired) and its 95 % percentile bootstrap interval over nodes.

    Returns:
        ``(mean_diff, lo, hi)``.
    """
    d = (a.float() - b.float()).flatten()
    n = d.numel()
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    idx = torch.randint(0, n, (n_boot, n), generator=make_generator(seed))
    means = d[idx].mean(dim=1)
    return float(d.mean()), float(torch.quantile(means, 0.025)), float(torch.quantile(means, 0.975))


def score_embeddings(s_emb: torch.Tensor, v_emb: torch.Tensor, t_emb: torch.Tensor, s_cls: torch.Tensor,
                     v_cls: torch.Tensor, t_cls: torch.Tensor, y: torch.Tensor | None = None,
                     seed: int = 0) -> dict[str, float]:
    """Fidelity and cosine of a surrogate to the victim, and their gains over the text prior.

    Args:
        s_emb / v_emb / t_emb: ``(N, d)`` surrogate, victim and text-prior embeddings of the evaluation nodes.
        s_cls / v_cls / t_cls: ``(C, d)`` class-prompt embeddings each model classifies with (the surrogate
            uses the victim's public text tower; the text prior uses the raw text encoder).
        y: Labels (optional) for zero-shot accuracy.
        seed: Bootstrap seed.

    Returns:
        ``fidelity``, ``cos``, ``fid_text``, ``cos_text``, ``fid_gain`` (+ ``_lo``/``_hi``), ``cos_gain``
        (+ ``_lo``/``_hi``) and, with labels, ``zs_acc``, ``victim_acc``, ``text_acc``, ``acc_gap`` (victim
        minus surrogate).
    """
    s_pred, v_pred, t_pred = zero_shot(s_emb, s_cls), zero_shot(v_emb, v_cls), zero_shot(t_emb, t_cls)
    agree_s, agree_t = (s_pred == v_pred).float(), (t_pred == v_pred).float()
    cos_s = F.cosine_similarity(s_emb, v_emb, dim=-1)
    cos_t = F.cosine_similarity(t_emb, v_emb, dim=-1)
    fg, flo, fhi = paired_bootstrap(agree_s, agree_t, seed=seed)
    cg, clo, chi = paired_bootstrap(cos_s, cos_t, seed=seed + 1)
    out = {"fidelity": float(agree_s.mean()), "cos": float(cos_s.mean()), "fid_text": float(agree_t.mean()),
           "cos_text": float(cos_t.mean()), "fid_gain": fg, "fid_gain_lo": flo, "fid_gain_hi": fhi,
           "cos_gain": cg, "cos_gain_lo": clo, "cos_gain_hi": chi}
    if y is not None:
        out["zs_acc"] = float((s_pred == y).float().mean())
        out["victim_acc"] = float((v_pred == y).float().mean())
        out["text_acc"] = float((t_pred == y).float().mean())
        out["acc_gap"] = out["victim_acc"] - out["zs_acc"]
    return out


def seed_interval(values: list[float], lo: list[float] | None = None, hi: list[float] | None = None) -> dict[str, Any]:
    """Mean over seeds with a 95 % interval: a t interval for >= 2 seeds, else the single seed's bootstrap bounds."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return {"mean": m, "lo": lo[0] if lo else float("nan"), "hi": hi[0] if hi else float("nan"), "n": 1,
                "interval": "bootstrap over nodes"}
    from scipy.stats import t

    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
    half = float(t.ppf(0.975, len(vals) - 1)) * sd / math.sqrt(len(vals))
    return {"mean": m, "lo": m - half, "hi": m + half, "n": len(vals), "interval": "t over seeds"}
