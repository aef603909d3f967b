"""FVL-FP's key figure: demographic-parity gap vs accuracy per method (mean ± std over seeds)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

KEY_FIGURE = "fairness_vs_accuracy.png"


def plot_fairness_accuracy(rows: list[dict[str, Any]], path: str | Path, title: str = "FVL-FP") -> Path | None:
    """Scatter of global-test accuracy (x) vs DP difference (y) per (setting, method), error bars over seeds."""
    pts: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if "acc" in r and "dp_diff" in r:
            pts[(r["setting"], r["method"])].append((float(r["acc"]), float(r["dp_diff"])))
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for (setting, method), v in sorted(pts.items()):
        a = np.array(v)
        label = method if setting == "default" else f"{method} ({setting})"
        ax.errorbar(a[:, 0].mean(), a[:, 1].mean(), xerr=a[:, 0].std(), yerr=a[:, 1].std(), fmt="o", capsize=3,
                    label=label)
    ax.set(xlabel="accuracy on the balanced global test set (fraction)",
           ylabel="demographic-parity difference (fraction; lower is fairer)")
    n_seeds = len({r["seed"] for r in rows})
    ax.set_title(f"{title}: fairness gap vs accuracy ({n_seeds} seed(s))")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
