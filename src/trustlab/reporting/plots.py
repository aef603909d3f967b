"""Matplotlib (Agg) plots written by every run: summary bars per metric and per-step curves."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_summary(summary: list[dict[str, Any]], path: Path, title: str = "") -> list[Path]:
    """One bar panel per metric: mean ± std per (setting, method). Returns written paths."""
    metrics = list(dict.fromkeys(k[:-5] for s in summary for k in s if k.endswith("_mean")))
    if not summary or not metrics:
        return []
    plt = _plt()
    metrics = metrics[:8]
    ncol = min(4, len(metrics))
    nrow = math.ceil(len(metrics) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow + 0.6), squeeze=False)
    labels = [f"{s['method']}" + (f"\n{s['setting']}" if len({x['setting'] for x in summary}) > 1 else "") for s in summary]
    for ax, m in zip(axes.flat, metrics, strict=False):
        means = [s.get(f"{m}_mean", float("nan")) for s in summary]
        stds = [s.get(f"{m}_std", 0.0) for s in summary]
        ax.bar(range(len(summary)), means, yerr=stds, capsize=2, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(summary)))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=6)
        ax.set_title(m, fontsize=9)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_series(series: list[dict[str, Any]], folder: Path, title: str = "") -> list[Path]:
    """One PNG per series metric: mean over seeds vs step, one line per (setting, method)."""
    if not series:
        return []
    plt = _plt()
    metrics = list(dict.fromkeys(k for r in series for k in r if k not in ("setting", "method", "seed", "step")))
    written = []
    for m in metrics:
        curves: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in series:
            if m in r:
                curves[(r["setting"], r["method"])][r["step"]].append(r[m])
        fig, ax = plt.subplots(figsize=(6, 4))
        many = len({k[0] for k in curves}) > 1
        for (setting, method), pts in curves.items():
            xs = sorted(pts)
            label = (f"{setting}/{method}" if many else method) if len(curves) < 20 else None
            ax.plot(xs, [sum(pts[x]) / len(pts[x]) for x in xs], label=label,
                    marker="." if len(xs) < 40 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(m)
        ax.set_title(f"{title}: {m}")
        if len(curves) < 20:
            ax.legend(fontsize=6)
        fig.tight_layout()
        p = folder / f"series_{m}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written
