"""Compare two results files row by row: does a rerun reproduce the committed figures?"""

from __future__ import annotations

import math
from typing import Any

KEY = ("setting", "method", "seed")
#: Figures measured with a clock or an allocator (never reproducible to 1e-6), beyond the name patterns
#: ``*_time_s``, ``latency*``, ``*time_ratio``. ``cost_ratio``: GFM extraction's attack / victim wall time;
#: ``cpu_per_image_s``: PCA's process CPU time per protected image.
TIMING_METRICS = frozenset({"seconds", "time_per_image_s", "cpu_per_image_s", "peak_mem_mb", "epoch_time_s",
                            "train_time_s", "cost_ratio"})


def is_timing(metric: str) -> bool:
    """Whether ``metric`` is a timing or memory figure (excluded from the reproduction check)."""
    return metric in TIMING_METRICS or metric.endswith("_time_s") or metric.startswith("latency") \
        or metric.endswith("time_ratio")


def compare_results(new: dict[str, Any], ref: dict[str, Any], tol: float = 1e-6) -> dict[str, Any]:
    """Per-metric absolute differences between the rows of two results files of the same system.

    Rows are matched on (setting, method, seed); metrics are the numeric keys the two rows share.

    Returns:
        ``{"compared": n_values, "max_abs_diff": float, "beyond_tol": [(setting, method, seed, metric,
        new, ref)], "only_new": [keys], "only_ref": [keys]}``.
    """
    def index(res: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
        return {tuple(r[k] for k in KEY): r for r in res.get("rows", [])}

    a, b = index(new), index(ref)
    beyond: list[tuple] = []
    compared, worst = 0, 0.0
    for key in a.keys() & b.keys():
        for m, v in a[key].items():
            w = b[key].get(m)
            if m in KEY or isinstance(v, bool) or not isinstance(v, (int, float)) or not isinstance(w, (int, float)):
                continue
            if is_timing(m):
                continue  # timings and memory are not reproducible figures
            if not (math.isfinite(v) and math.isfinite(w)):
                if math.isfinite(v) != math.isfinite(w):
                    beyond.append((*key, m, v, w))
                continue
            compared += 1
            d = abs(float(v) - float(w))
            worst = max(worst, d)
            if d > tol * max(1.0, abs(float(w))):
                beyond.append((*key, m, v, w))
    return {"compared": compared, "max_abs_diff": worst, "beyond_tol": sorted(beyond, key=str),
            "only_new": sorted(a.keys() - b.keys(), key=str), "only_ref": sorted(b.keys() - a.keys(), key=str)}
