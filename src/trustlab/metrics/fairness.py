"""Group-fairness metrics as pure NumPy functions: demographic parity, equalized odds, worst-group accuracy.

Definitions (fairlearn semantics for the binary case, so the values equal
``fairlearn.metrics.demographic_parity_difference`` / ``equalized_odds_difference`` and
``MetricFrame(...).group_min()``; ``tests/metrics/test_fairness.py`` checks this):

* **Demographic parity difference** (DP): for a positive label ``c``,
  ``max_a P(Y_hat=c | A=a) - min_a P(Y_hat=c | A=a)``. Binary tasks use ``positive_label`` (default 1).
  Multiclass tasks (``positive_label=None`` and more than two labels) use one-vs-rest and take the
  maximum over classes; for two classes both one-vs-rest gaps are equal, so the extension agrees with
  the binary definition.
* **Equalized odds difference** (EO): ``max(TPR gap, FPR gap)`` across groups, where
  ``TPR_a = P(Y_hat=c | Y=c, A=a)`` and ``FPR_a = P(Y_hat=c | Y!=c, A=a)``; multiclass via one-vs-rest max.
  A (group, class) cell without samples in the denominator is left out (fairlearn would warn and use 0).
* **Worst-group accuracy**: ``min_g accuracy(g)`` over the given groups (pass ``y * G + a`` to use the
  (label, attribute) cells of Sagawa et al., 2020).

References:
    Hardt, Price, Srebro, "Equality of Opportunity in Supervised Learning", NeurIPS 2016.
    Bird et al., "Fairlearn: A toolkit for assessing and improving fairness in AI", 2020.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "dp_diff",
    "eo_diff",
    "fairness_report",
    "group_accuracy",
    "selection_rates",
    "worst_group_acc",
]


def _as_1d(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _check(y_pred: ArrayLike, groups: ArrayLike, y_true: ArrayLike | None = None) -> tuple[np.ndarray, ...]:
    yp = _as_1d(y_pred, "y_pred")
    g = _as_1d(groups, "groups")
    if len(yp) != len(g):
        raise ValueError(f"y_pred and groups differ in length ({len(yp)} != {len(g)})")
    if len(yp) == 0:
        raise ValueError("fairness metrics need at least one sample")
    if y_true is None:
        return yp, g
    yt = _as_1d(y_true, "y_true")
    if len(yt) != len(yp):
        raise ValueError(f"y_true and y_pred differ in length ({len(yt)} != {len(yp)})")
    return yt, yp, g


def _positives(labels: np.ndarray, positive_label: Any | None) -> list[Any]:
    """Classes to treat as positive: the given one, 1 for binary {0,1}, else all (one-vs-rest)."""
    if positive_label is not None:
        return [positive_label]
    uniq = np.unique(labels)
    if len(uniq) <= 2 and set(uniq.tolist()) <= {0, 1}:
        return [1]
    return uniq.tolist()


def selection_rates(y_pred: ArrayLike, groups: ArrayLike, positive_label: Any = 1) -> dict[Any, float]:
    """``P(Y_hat = positive_label | A = a)`` for every group ``a``.

    Example:
        >>> selection_rates([1, 0, 1, 1], [0, 0, 1, 1])
        {0: 0.5, 1: 1.0}
    """
    yp, g = _check(y_pred, groups)
    return {a.item() if hasattr(a, "item") else a: float(np.mean(yp[g == a] == positive_label)) for a in np.unique(g)}


def dp_diff(
    y_true: ArrayLike | None,
    y_pred: ArrayLike,
    groups: ArrayLike,
    positive_label: Any | None = None,
    labels: Sequence[Any] | None = None,
) -> float:
    """Demographic parity difference (max over one-vs-rest classes for multiclass).

    Args:
        y_true: Ignored except to infer the label set (fairlearn's signature); may be ``None``.
        y_pred: Predicted labels.
        groups: Sensitive attribute per sample.
        positive_label: The positive class; ``None`` means 1 for {0,1} tasks, else every class.
        labels: The label set for the multiclass extension (default: labels seen in y_true/y_pred).

    Returns:
        A fraction in [0, 1]; 0 means equal selection rates across groups.

    Example:
        >>> dp_diff(None, [1, 1, 0, 0], [0, 0, 1, 1])
        1.0
    """
    yp, g = _check(y_pred, groups)
    seen = yp if y_true is None else np.concatenate([_as_1d(y_true, "y_true"), yp])
    classes = [positive_label] if positive_label is not None else (
        list(labels) if labels is not None else _positives(seen, None))
    worst = 0.0
    for c in classes:
        rates = list(selection_rates(yp, g, c).values())
        worst = max(worst, max(rates) - min(rates))
    return float(worst)


def _rate_gap(hit: np.ndarray, cond: np.ndarray, g: np.ndarray) -> float:
    """max - min over groups of ``P(hit | cond, A=a)``, skipping groups with no ``cond`` samples."""
    rates = [float(np.mean(hit[cond & (g == a)])) for a in np.unique(g) if np.any(cond & (g == a))]
    return max(rates) - min(rates) if len(rates) >= 2 else 0.0


def eo_diff(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike,
    positive_label: Any | None = None,
    labels: Sequence[Any] | None = None,
) -> float:
    """Equalized odds difference: ``max(TPR gap, FPR gap)`` (one-vs-rest max for multiclass).

    Args:
        y_true: True labels.
        y_pred: Predicted labels.
        groups: Sensitive attribute per sample.
        positive_label: The positive class; ``None`` means 1 for {0,1} tasks, else every class.
        labels: The label set for the multiclass extension (default: labels seen).

    Example:
        >>> eo_diff([1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 1])
        1.0
    """
    yt, yp, g = _check(y_pred, groups, y_true)
    classes = [positive_label] if positive_label is not None else (
        list(labels) if labels is not None else _positives(np.concatenate([yt, yp]), None))
    worst = 0.0
    for c in classes:
        hit = yp == c
        worst = max(worst, _rate_gap(hit, yt == c, g), _rate_gap(hit, yt != c, g))
    return float(worst)


def group_accuracy(y_true: ArrayLike, y_pred: ArrayLike, groups: ArrayLike) -> dict[Any, float]:
    """Accuracy within each group.

    Example:
        >>> group_accuracy([1, 0, 1, 1], [1, 0, 0, 1], ["a", "a", "b", "b"])
        {'a': 1.0, 'b': 0.5}
    """
    yt, yp, g = _check(y_pred, groups, y_true)
    return {a.item() if hasattr(a, "item") else a: float(np.mean(yt[g == a] == yp[g == a])) for a in np.unique(g)}


def worst_group_acc(y_true: ArrayLike, y_pred: ArrayLike, groups: ArrayLike) -> float:
    """Lowest per-group accuracy (``MetricFrame(accuracy_score, ...).group_min()``).

    Example:
        >>> worst_group_acc([1, 0, 1, 1], [1, 0, 0, 1], [0, 0, 1, 1])
        0.5
    """
    return float(min(group_accuracy(y_true, y_pred, groups).values()))


def fairness_report(y_true: ArrayLike, y_pred: ArrayLike, groups: ArrayLike, n_classes: int | None = None) -> dict[str, float]:
    """Accuracy, DP difference, EO difference and worst-group accuracy in one dict.

    Worst-group accuracy is taken over the (label, attribute) cells.

    Args:
        y_true: True labels (ints ``0..n_classes-1``).
        y_pred: Predicted labels.
        groups: Sensitive attribute (ints).
        n_classes: Number of classes (default: inferred).
    """
    yt, yp, g = _check(y_pred, groups, y_true)
    yt = yt.astype(np.int64)
    g = g.astype(np.int64)
    labels = list(range(n_classes)) if n_classes is not None else None
    if labels is not None and n_classes == 2:
        labels = None
    cells = yt * (int(g.max()) + 1) + g
    return {
        "acc": float(np.mean(yt == yp)),
        "dp_diff": dp_diff(yt, yp, g, labels=labels),
        "eo_diff": eo_diff(yt, yp, g, labels=labels),
        "worst_group_acc": worst_group_acc(yt, yp, cells),
    }


def group_table(y_true: ArrayLike, y_pred: ArrayLike, groups: ArrayLike, n_classes: int | None = None) -> list[dict[str, Any]]:
    """Per-group metrics computed by fairlearn's ``MetricFrame`` (one dict per group, plus an ``"overall"`` row).

    Columns: ``count``, ``accuracy`` and ``rate_c`` (share of the group predicted as class ``c``, the
    selection rate of class ``c``; the demographic-parity difference of class ``c`` is the spread of
    its column). Needs the ``fair`` extra (fairlearn).

    Example:
        >>> rows = group_table([1, 0, 1, 1], [1, 0, 0, 1], ["a", "a", "b", "b"], n_classes=2)
        >>> [(r["group"], r["accuracy"], r["rate_1"]) for r in rows]
        [('a', 1.0, 0.5), ('b', 0.5, 0.5), ('overall', 0.75, 0.5)]
    """
    from fairlearn.metrics import MetricFrame, count

    yt, yp, g = _check(y_pred, groups, y_true)
    k = int(n_classes) if n_classes is not None else int(max(yt.max(), yp.max())) + 1

    def rate(c: int):  # noqa: ANN202 - fairlearn metric signature
        return lambda t, p: float(np.mean(np.asarray(p) == c))

    metrics: dict[str, Any] = {"count": count, "accuracy": lambda t, p: float(np.mean(np.asarray(t) == np.asarray(p)))}
    metrics.update({f"rate_{c}": rate(c) for c in range(k)})
    mf = MetricFrame(metrics=metrics, y_true=yt, y_pred=yp, sensitive_features=g)
    rows = []
    for grp, vals in mf.by_group.iterrows():
        rows.append({"group": grp.item() if hasattr(grp, "item") else grp,
                     **{c: (int(v) if c == "count" else float(v)) for c, v in vals.items()}})
    rows.append({"group": "overall", **{c: (int(v) if c == "count" else float(v)) for c, v in mf.overall.items()}})
    return rows
