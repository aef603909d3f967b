"""Backdoor metrics: clean accuracy, attack success rate, malicious-client detection quality.

Example:
    >>> import numpy as np
    >>> attack_success_rate(np.array([0, 0, 1, 0]), np.array([0, 1, 2, 3]), target=0)
    0.6666666666666666
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["attack_success_rate", "clean_accuracy", "detection_precision_recall"]


def clean_accuracy(pred: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of correct predictions on clean inputs."""
    p, y = np.asarray(pred).ravel(), np.asarray(labels).ravel()
    if p.shape != y.shape or p.size == 0:
        raise ValueError(f"pred and labels must be non-empty and equal in size, got {p.shape} and {y.shape}")
    return float((p == y).mean())


def attack_success_rate(pred_triggered: ArrayLike, labels: ArrayLike, target: int) -> float:
    """Fraction of triggered inputs *whose true class is not the target* classified as ``target``.

    Args:
        pred_triggered: Predictions on triggered inputs.
        labels: True labels of the (clean) inputs.
        target: The attacker's target class.
    """
    p, y = np.asarray(pred_triggered).ravel(), np.asarray(labels).ravel()
    if p.shape != y.shape:
        raise ValueError(f"pred and labels differ in size: {p.shape} vs {y.shape}")
    keep = y != target
    if not keep.any():
        raise ValueError("no input with a true class different from the target")
    return float((p[keep] == target).mean())


def detection_precision_recall(flagged: Iterable[object], malicious: Iterable[object]) -> tuple[float, float]:
    """Precision and recall of flagged clients against the true malicious set.

    Precision is 1.0 when nothing is flagged (no false alarm); recall is 1.0 when nobody is malicious.
    """
    f, m = set(flagged), set(malicious)
    tp = len(f & m)
    precision = tp / len(f) if f else 1.0
    recall = tp / len(m) if m else 1.0
    return precision, recall
