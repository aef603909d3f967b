"""Shared figure: images in a grid with labelled rows and columns (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import torch


def _plt():  # noqa: ANN202 - pyplot module
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_grid_figure(path: Path, rows: list[tuple[str, list[torch.Tensor]]], cols: list[str], title: str) -> Path:
    """Images ``(3, H, W)`` in [0, 1] in a grid with labelled rows and columns."""
    plt = _plt()
    n_r, n_c = len(rows), max(len(r[1]) for r in rows)
    height = 1.3 * n_r + 0.6
    fig, axes = plt.subplots(n_r, n_c, figsize=(1.3 * n_c + 1.6, height), squeeze=False)
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
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / height))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
