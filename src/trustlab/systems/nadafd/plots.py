"""NADAFD's key figure: attack success rate and clean accuracy vs federated round (mean ± std over seeds)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

KEY_FIGURE = "asr_clean_vs_round.png"


def plot_asr_clean(series: list[dict[str, Any]], path: str | Path, title: str = "NADAFD") -> Path | None:
    """Two panels (ASR, clean accuracy) vs round, one line per (setting, method), ±1 std band over seeds."""
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[tuple[str, str], dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in series:
        for m in ("asr", "clean_acc"):
            if m in r:
                curves[(r["setting"], r["method"])][m][int(r["step"])].append(float(r[m]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for (setting, method), per in sorted(curves.items()):
        for ax, m in zip(axes, ("asr", "clean_acc"), strict=True):
            steps = sorted(per[m])
            mu = np.array([np.mean(per[m][s]) for s in steps])
            sd = np.array([np.std(per[m][s]) for s in steps])
            (line,) = ax.plot(steps, mu, marker="o", ms=3, label=f"{method} ({setting})")
            if any(len(per[m][s]) > 1 for s in steps):
                ax.fill_between(steps, mu - sd, mu + sd, alpha=0.2, color=line.get_color())
    axes[0].set(xlabel="federated round", ylabel="attack success rate (fraction)", title="ASR", ylim=(-0.02, 1.02))
    axes[1].set(xlabel="federated round", ylabel="clean accuracy (fraction)", title="clean accuracy", ylim=(0, 1.02))
    axes[1].legend(fontsize=7, loc="lower right")
    n_seeds = len({r["seed"] for r in series})
    fig.suptitle(f"{title}: mean over {n_seeds} seed(s)" + (" ± 1 std" if n_seeds > 1 else ""))
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
