"""Figures of the hijacking experiment: success rate vs eps per defense (key figure) and a labelled image grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


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


def image_grid_figure(path: Path, rows: list[tuple[str, list[torch.Tensor]]], cols: list[str], title: str) -> Path:
    """Images ``(3, H, W)`` in [0, 1] in a grid with labelled rows and columns."""
    plt = _plt()
    n_r, n_c = len(rows), max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(n_r, n_c, figsize=(1.3 * n_c + 1.6, 1.3 * n_r + 0.5), squeeze=False)
    for i, (label, imgs) in enumerate(rows):
        for j in range(n_c):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(imgs):
                ax.imshow(imgs[j].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            if j == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
            if i == 0 and j < len(cols):
                ax.set_title(cols[j], fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
