"""Key figure of the PCA experiment: reconstruction distance vs the protection budget eps."""

from __future__ import annotations

from pathlib import Path


def distance_vs_eps(path: Path, points: dict[str, list[tuple[float, float, float]]], vae_name: str) -> Path:
    """PSNR of the protected image's reconstruction to the clean one's (lower = more damage) vs eps.

    ``points[method]`` holds ``(eps_255, mean, std over images)``; repeated eps (seeds) are averaged.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for method, pts in points.items():
        by_eps: dict[float, list[tuple[float, float]]] = {}
        for e, mu, sd in pts:
            by_eps.setdefault(e, []).append((mu, sd))
        xs = sorted(by_eps)
        mean = np.array([np.mean([p[0] for p in by_eps[e]]) for e in xs])
        std = np.array([np.mean([p[1] for p in by_eps[e]]) for e in xs])
        ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=method)
    ax.set_xlabel("protection budget ε (L∞, /255)")
    ax.set_ylabel("PSNR(recon(protected), recon(clean)) [dB]\n(lower = stronger protection)")
    ax.set_title(f"PCA vs baselines: reconstruction distance vs ε (VAE {vae_name})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
