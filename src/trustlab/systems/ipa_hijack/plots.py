"""Figures of the hijacking experiment: success rate vs eps per defense (key figure) and a labelled image grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trustlab.diffusion.plots import image_grid_figure

__all__ = ["image_grid_figure", "success_vs_eps"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def success_vs_eps(path: Path, rows: list[dict[str, Any]], methods: list[str], chance: float) -> Path:
    """Hijack success rate (generation judged as the target concept) vs eps; mean +- std over seeds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method in methods:
        pts: dict[float, list[float]] = {}
        for r in rows:
            if r["method"] == method and "success_rate" in r:
                e = float(r["setting"].split("=")[1].split("/")[0])
                pts.setdefault(e, []).append(float(r["success_rate"]))
        if not pts:
            continue
        xs = sorted(pts)
        mean = np.array([np.mean(pts[e]) for e in xs])
        std = np.array([np.std(pts[e]) if len(pts[e]) > 1 else 0.0 for e in xs])
        style = "--" if method not in ("none", "jpeg", "noise", "adv_encoder") else "-"
        ax.errorbar(xs, mean, yerr=std, marker="o", linestyle=style, capsize=3, label=method)
    ax.axhline(chance, color="grey", linestyle=":", label="chance")
    ax.set_xlabel("attack budget ε (L∞, /255)")
    ax.set_ylabel("hijack success rate (fraction of generations)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("IP-Adapter hijacking: success vs ε per defense (dashed: adaptive attacks)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
