"""The key figure of SepPrune: test SI-SNRi after one fine-tuning epoch against the MACs kept, every method."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

COLORS = {"dense": "black", "sepprune": "tab:red", "sepprune_l1init": "tab:purple", "l1": "tab:blue",
          "hrank": "tab:green", "random": "tab:orange", "scratch": "tab:gray"}
MARKERS = {0: "o", 1: "s", 2: "^"}


def plot_key_figure(rec: Any, path: str | Path) -> Path:
    """SI-SNRi (dB, mean +/- std over seeds) vs MACs ratio, one point per (setting, method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [r for r in rec.rows if "si_snri_db" in r and "macs_ratio" in r]
    settings = sorted({r["setting"] for r in rows})
    fig, ax = plt.subplots(figsize=(10, 4.8))
    points = []
    for si, setting in enumerate(settings):
        for mi, method in enumerate(COLORS):
            sel = [r for r in rows if r["setting"] == setting and r["method"] == method]
            if not sel or (method == "dense" and any(p[1] == "dense" for p in points)):
                continue
            ys = [r["si_snri_db"] for r in sel]
            x = statistics.fmean(r["macs_ratio"] for r in sel) + 0.004 * (mi - 3) * (method != "dense")
            points.append((setting, method, si, x, statistics.fmean(ys), statistics.stdev(ys) if len(ys) > 1 else 0.0))
    pruned = [p[4] for p in points if p[1] != "scratch"]
    lo = min(pruned) - 0.15 * (max(pruned) - min(pruned) + 0.5)
    hi = max(pruned) + 0.1 * (max(pruned) - min(pruned) + 0.5)
    for setting, method, si, x, y, err in points:
        label = "dense (+1 epoch)" if method == "dense" else f"{method} [{setting}]"
        if y < lo:  # far below the pruned models (scratch): drawn at the floor with its value
            label += f" = {y:.1f} dB (below axis)"
            ax.errorbar(x, lo + 0.02 * (hi - lo), fmt="v", color=COLORS[method], markersize=8, label=label)
            continue
        ax.errorbar(x, y, yerr=err, fmt=MARKERS.get(si, "D"), color=COLORS[method], capsize=3, markersize=7,
                    label=label, alpha=0.9)
    ax.set_ylim(lo, hi)
    n = len({r["seed"] for r in rows})
    ax.set_xlabel("MACs kept (fraction of the dense model, 1 s of 8 kHz audio)")
    ax.set_ylabel("test SI-SNRi after one fine-tuning epoch (dB)")
    ax.set_title(f"SepPrune: SI-SNRi vs MACs ({n} seed{'s' if n != 1 else ''}; bars: std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
