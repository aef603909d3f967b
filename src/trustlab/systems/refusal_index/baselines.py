"""The metrics the paper argues against, computed side by side with RI.

Refusal-rate-based (SimpleQA family): refusal rate, accuracy, C/A (correct given attempted),
SimpleQA's F-score, a penalised "weighted"/reliability score. Calibration-based: AUROC and ECE of a
confidence score (verbalised confidence in the simulation, log-prob confidence for real models)
over the *answered* questions, predicting correctness.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from trustlab.metrics.refusal import (
    accuracy,
    accuracy_given_attempted,
    auroc,
    expected_calibration_error,
    refusal_rate,
    simpleqa_f_score,
    weighted_score,
)

BASELINE_METRICS = ("refusal_rate", "accuracy", "c_given_a", "f_score", "weighted", "auroc_conf", "ece_conf")


def baseline_metrics(
    refused: NDArray[np.bool_],
    correct: NDArray[np.bool_],
    confidence: NDArray[np.float64] | None = None,
    penalty: float = 1.0,
    n_bins: int = 10,
) -> dict[str, float]:
    """Refusal-rate-based and calibration metrics of one pass-1 evaluation.

    Args:
        refused: Pass-1 refusals.
        correct: Pass-1 correct answers (False where refused).
        confidence: Per-question confidence in [0, 1] (NaN where unknown); AUROC/ECE use answered
            questions with a finite confidence.
        penalty: Weight of a wrong answer in the weighted score.
        n_bins: ECE bins.

    Returns:
        The metrics of :data:`BASELINE_METRICS` (those that are undefined are left out).
    """
    refused = np.asarray(refused, bool)
    correct = np.asarray(correct, bool)
    n = refused.size
    n_correct = int(correct.sum())
    n_wrong = int((~refused & ~correct).sum())
    c_rate = accuracy(correct)
    cga = accuracy_given_attempted(n_correct, n_wrong)
    out = {"refusal_rate": refusal_rate(refused), "accuracy": c_rate, "c_given_a": cga,
           "f_score": simpleqa_f_score(c_rate, cga), "weighted": weighted_score(c_rate, n_wrong / n, penalty)}
    if confidence is not None:
        conf = np.asarray(confidence, float)
        m = ~refused & np.isfinite(conf)
        if m.sum() >= 2:
            out["auroc_conf"] = auroc(conf[m], correct[m])
            out["ece_conf"] = expected_calibration_error(conf[m], correct[m], n_bins=n_bins)
    return {k: v for k, v in out.items() if isinstance(v, float) and math.isfinite(v)}
