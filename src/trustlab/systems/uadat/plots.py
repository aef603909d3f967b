"""UAD-AT's key figure: robust vs clean accuracy per method (mean over seeds, error bars = std over seeds)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from trustlab.utils.io import atomic_write_bytes

#: Drawing order and colours: baselines grey/blue, the CE rows orange, UAD-AT red, ablations light red.
_STYLE: dict[str, tuple[str, str]] = {
    "standard": ("#7f7f7f", "s"), "pgd_at": ("#1f77b4", "o"), "trades": ("#2ca02c", "o"), "mart": ("#9467bd", "o"),
    "trades_ce": ("#ff7f0e", "D"), "uadat_ce": ("#8c564b", "D"), "uadat": ("#d62728", "*"),
}


def robust_vs_clean(rows: list[dict[str, Any]], path: Path, robust_metric: str, robust_label: str) -> Path:
    """Scatter ``nat_acc`` (x) against ``robust_metric`` (y), one point per method, error bars over seeds.

    Args:
        rows: Result rows (``method``, ``seed``, ``nat_acc``, ``robust_metric``).
        path: The PNG to write (atomically).
        robust_metric: Row key of the robust accuracy (``aa_acc``, ``aa_reduced_acc`` or ``pgd_acc``).
        robust_label: What that metric is, for the axis label.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if "nat_acc" in r and robust_metric in r:
            methods.setdefault(r["method"], []).append(r)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for m, rs in methods.items():
        xs = [100 * r["nat_acc"] for r in rs]
        ys = [100 * r[robust_metric] for r in rs]
        colour, marker = _STYLE.get(m, ("#e377c2", "v"))
        sx = statistics.stdev(xs) if len(xs) > 1 else 0.0
        sy = statistics.stdev(ys) if len(ys) > 1 else 0.0
        ax.errorbar(statistics.fmean(xs), statistics.fmean(ys), xerr=sx, yerr=sy, fmt=marker, color=colour,
                    ms=11 if marker == "*" else 7, capsize=3, label=f"{m} (n={len(rs)})")
    n_seeds = max((len(v) for v in methods.values()), default=0)
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel(f"robust accuracy (%), {robust_label}")
    ax.set_title("Robust vs clean accuracy per method" + (f" (mean ± std over {n_seeds} seeds)" if n_seeds > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path
