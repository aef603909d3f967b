"""ICFNet's key figure: C-index per cohort and method with 95 % intervals."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.utils.logging import get_logger

log = get_logger(__name__)

KEY_FIGURE = "cindex_per_cohort.png"


def cindex_intervals(rows: list[dict[str, Any]], folds: int) -> dict[str, dict[str, dict[str, float]]]:
    """Mean Harrell's C per (cohort, method) with a two-sided 95 % t-interval.

    Over seeds when there are several (each seed's value is its k-fold mean); with one seed, over
    that seed's folds (``c_index_fold_std`` is the population SD of the fold C-indices).
    """
    from scipy import stats

    out: dict[str, dict[str, dict[str, float]]] = {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["setting"], r["method"]), []).append(r)
    for (setting, method), rs in groups.items():
        c = np.array([r["c_index"] for r in rs], float)
        if c.size >= 2:
            half = float(stats.t.ppf(0.975, c.size - 1) * c.std(ddof=1) / math.sqrt(c.size))
            over = f"{c.size} seeds"
        else:
            sd = float(rs[0].get("c_index_fold_std", math.nan)) * math.sqrt(folds / max(folds - 1, 1))
            half = float(stats.t.ppf(0.975, folds - 1) * sd / math.sqrt(folds))
            over = f"{folds} folds"
        m = float(c.mean())
        out.setdefault(setting, {})[method] = {"c_index": m, "lo": m - half, "hi": m + half, "over": over}
    return out


def plot_cindex_per_cohort(intervals: dict[str, dict[str, dict[str, float]]], path: Path,
                           title: str = "C-index per cohort (k-fold CV) with 95 % intervals") -> Path | None:
    """Dot-and-whisker plot: one panel per cohort, methods on the y axis, C-index with its interval."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a core dependency
        log.warning("matplotlib missing: no key figure")
        return None
    settings = list(intervals)
    n_max = max(len(v) for v in intervals.values())
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 0.38 * n_max + 2.2), squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=True):
        res = intervals[setting]
        methods = sorted(res, key=lambda m: res[m]["c_index"])
        y = np.arange(len(methods))
        mean = np.array([res[m]["c_index"] for m in methods])
        err = np.array([[res[m]["c_index"] - res[m]["lo"] for m in methods],
                        [res[m]["hi"] - res[m]["c_index"] for m in methods]])
        icf = np.array([m.startswith("icfnet") for m in methods])
        over = next(iter(res.values()))["over"]
        ax.errorbar(mean[~icf], y[~icf], xerr=err[:, ~icf], fmt="o", color="tab:gray", capsize=3,
                    label=f"baselines / single modality (95 % CI over {over})")
        ax.errorbar(mean[icf], y[icf], xerr=err[:, icf], fmt="s", color="tab:red", capsize=3,
                    label="ICFNet rows")
        ax.axvline(0.5, color="k", lw=0.6, ls=":")
        ax.set_yticks(y, methods, fontsize=8)
        ax.set_xlabel("Harrell's C-index (unitless; 0.5 = chance)")
        ax.set_title(setting, fontsize=10)
        ax.set_ylim(-0.7, len(methods) - 0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    """Draw the key figure from a results file: ``python -m trustlab.systems.icfnet.plots RESULTS.json OUT.png [TITLE]``."""
    import sys

    from trustlab.utils.io import read_json

    args = sys.argv[1:] if argv is None else argv
    rec = read_json(args[0])
    intervals = cindex_intervals(rec["rows"], int(rec["config"]["folds"]))
    kw = {"title": args[2]} if len(args) > 2 else {}
    plot_cindex_per_cohort(intervals, Path(args[1]), **kw)


if __name__ == "__main__":
    main()
