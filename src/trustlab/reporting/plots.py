"""Matplotlib (Agg) plots written by every run: a summary panel per metric and per-step curves.

Summary panels group bars by setting, colour them by method (one legend for the figure), label the
y axis with the metric and its unit, and draw mean ± std over seeds as error bars. Interval bounds
(``*_ci_low`` / ``*_ci_high`` / ``*_lo`` / ``*_hi``) are drawn as the interval of their metric, never as
metrics of their own. Series plots draw the mean over seeds with a ±1 std band and a named x axis.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

#: Suffixes of interval bounds: ``<metric><suffix>`` is a bound of ``<metric>``, not a metric.
CI_SUFFIXES = (("_ci_low", "_ci_high"), ("_ci_lo", "_ci_hi"), ("_lo", "_hi"), ("_low", "_high"))
#: Bookkeeping figures that are not results.
NOT_METRICS = {"n", "seconds", "queries", "n_questions", "weighted", "matched", "chance"}


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_label(metric: str) -> str:
    """Axis label: the metric and its unit, from the naming conventions (``_db`` dB, ``_s`` s, ...)."""
    units = [(r"_db$", "dB"), (r"(_time)?_s$", "s"), (r"_mb$", "MB"), (r"_ratio$", "ratio"), (r"^ppl$", "perplexity"),
             (r"(acc|rate|asr|fidelity|recovery|diff|_acc_.*)$", "fraction"), (r"_255$", "/255"),
             (r"psnr", "dB"), (r"bits", "bits")]
    for pat, unit in units:
        if re.search(pat, metric):
            return f"{metric} ({unit})"
    return metric


def _is_bound(metric: str, metrics: set[str]) -> bool:
    for lo, hi in CI_SUFFIXES:
        for suf in (lo, hi):
            if metric.endswith(suf) and (metric[: -len(suf)] in metrics or suf in ("_ci_low", "_ci_high")):
                return True
    return False


def summary_metrics(summary: list[dict[str, Any]], preferred: list[str] | None = None) -> list[str]:
    """The metrics a summary plot shows: ``preferred`` (headline metrics) first, then the others; interval
    bounds and bookkeeping counts are left out."""
    found = list(dict.fromkeys(k[:-5] for s in summary for k in s if k.endswith("_mean")))
    keep = [m for m in found if not _is_bound(m, set(found)) and m not in NOT_METRICS]
    first = [m for m in (preferred or []) if m in keep]
    return first + [m for m in keep if m not in first]


def plot_summary(summary: list[dict[str, Any]], path: Path, title: str = "",
                 metrics: list[str] | None = None, max_metrics: int = 12) -> list[Path]:
    """One panel per metric: bars grouped by setting, coloured by method, mean ± std over seeds.

    Args:
        summary: The run's summary rows.
        path: PNG to write.
        title: Figure title.
        metrics: Metrics to show first (the system's headline metrics); every other metric follows
            up to ``max_metrics`` panels in all (headline metrics are never dropped).
    """
    shown = summary_metrics(summary, metrics)
    if not summary or not shown:
        return []
    n_pref = len([m for m in (metrics or []) if m in shown])
    shown = shown[: max(max_metrics, n_pref)]
    plt = _plt()
    settings = list(dict.fromkeys(s["setting"] for s in summary))
    methods = list(dict.fromkeys(s["method"] for s in summary))
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    colours = {m: cmap(i % cmap.N) for i, m in enumerate(methods)}
    cell = {(s["setting"], s["method"]): s for s in summary}
    width_per = min(15.0, max(3.6, 0.09 * len(settings) * len(methods) + 1.5))
    ncol = max(1, min(len(shown), 4, int(16 // width_per)))
    nrow = math.ceil(len(shown) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(width_per * ncol, 3.0 * nrow + 0.4 + 0.24 * math.ceil(len(methods) / 6)),
                             squeeze=False)
    bar_w = 0.8 / len(methods)
    for ax, m in zip(axes.flat, shown, strict=False):
        for j, meth in enumerate(methods):
            xs, ys, err = [], [], []
            for i, st in enumerate(settings):
                s = cell.get((st, meth))
                if s is None or f"{m}_mean" not in s or not math.isfinite(s[f"{m}_mean"]):
                    continue
                xs.append(i - 0.4 + bar_w * (j + 0.5))
                ys.append(s[f"{m}_mean"])
                err.append(s.get(f"{m}_std", 0.0) if s.get("n", 1) > 1 else 0.0)
            if xs:
                ax.bar(xs, ys, width=bar_w, yerr=err, capsize=2, color=colours[meth], label=meth,
                       error_kw={"elinewidth": 0.8})
        ax.set_xticks(range(len(settings)))
        ax.set_xticklabels(settings, rotation=30 if len(settings) > 3 else 0, ha="right" if len(settings) > 3 else "center",
                           fontsize=7)
        ax.set_ylabel(metric_label(m), fontsize=8)
        ax.set_xlabel("setting", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[m]) for m in methods]
    fig_h = fig.get_figheight()
    legend_rows = math.ceil(len(methods) / 6)
    header = 0.4 + 0.24 * legend_rows  # inches above the panels: title + legend
    n_seeds = max((s.get("n", 1) for s in summary), default=1)
    fig.suptitle(f"{title}: mean ± std over {n_seeds} seeds" if n_seeds > 1 else f"{title} (one seed)",
                 y=1 - 0.05 / fig_h, va="top", fontsize=10)
    fig.legend(handles, methods, loc="upper center", ncol=min(len(methods), 6), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.32 / fig_h))
    fig.tight_layout(rect=(0, 0, 1, 1 - header / fig_h))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_series(series: list[dict[str, Any]], folder: Path, title: str = "", x_label: str = "step") -> list[Path]:
    """One PNG per series metric: the mean over seeds vs the x axis (``x_label``: round, epoch, step), with a
    ±1 std band where there are several seeds; one line per (setting, method)."""
    if not series:
        return []
    plt = _plt()
    metrics = list(dict.fromkeys(k for r in series for k in r if k not in ("setting", "method", "seed", "step")))
    written = []
    for m in metrics:
        curves: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in series:
            if m in r and r[m] is not None and math.isfinite(r[m]):
                curves[(r["setting"], r["method"])][r["step"]].append(r[m])
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4))
        many = len({k[0] for k in curves}) > 1
        n_seeds = max(len(v) for pts in curves.values() for v in pts.values())
        for (setting, method), pts in curves.items():
            xs = sorted(pts)
            mean = [statistics.fmean(pts[x]) for x in xs]
            label = (f"{setting}/{method}" if many else method) if len(curves) < 20 else None
            (line,) = ax.plot(xs, mean, label=label, marker="." if len(xs) < 40 else None)
            if n_seeds > 1:
                sd = [statistics.stdev(pts[x]) if len(pts[x]) > 1 else 0.0 for x in xs]
                ax.fill_between(xs, [a - b for a, b in zip(mean, sd, strict=True)],
                                [a + b for a, b in zip(mean, sd, strict=True)], color=line.get_color(), alpha=0.2)
        ax.set_xlabel(x_label)
        ax.set_ylabel(metric_label(m))
        band = f" (mean ± std over {n_seeds} seeds)" if n_seeds > 1 else ""
        ax.set_title(f"{title}: {m}{band}", fontsize=9)
        ax.grid(alpha=0.3)
        if len(curves) < 20:
            ax.legend(fontsize=7)
        fig.tight_layout()
        p = folder / f"series_{m}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written
