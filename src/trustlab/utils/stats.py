"""Small statistics shared by the systems' reports."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a − b`` (paired by position) and its two-sided Student-t interval ``(mean, lo, hi)``.

    With fewer than two pairs the interval is undefined: ``(mean, nan, nan)``.
    """
    d = np.asarray(a, float) - np.asarray(b, float)
    if d.size < 2:
        return float(d.mean()), float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)
