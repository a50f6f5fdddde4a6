"""Classification metrics: accuracy, mean per-class accuracy, macro-F1, confusion, calibration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SUMMARY_METRICS = (
    "accuracy", "accuracy_mirror_tta", "mean_class_accuracy", "macro_f1", "n", "ece_before",
    "ece_after", "accuracy_perturbed_landmarks",
)  # fmt: skip
"""The keys of a run's ``metrics.json`` that the ablation table and a model record keep."""


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows are true classes and columns predicted."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 15
) -> float:
    """ECE of (N, C) probabilities: |accuracy - confidence| over equal-width confidence bins."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def classification_report(
    labels: np.ndarray, predictions: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, mean per-class accuracy and macro-F1 over the classes present in ``labels``,
    plus the confusion matrix and a per-class precision/recall/F1/support table."""
    matrix = confusion_matrix(labels, predictions, len(classes))
    support = matrix.sum(1)
    predicted = matrix.sum(0)
    true_positive = np.diag(matrix)
    recall = np.divide(true_positive, support, out=np.zeros(len(classes)), where=support > 0)
    precision = np.divide(true_positive, predicted, out=np.zeros(len(classes)), where=predicted > 0)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros(len(classes)), where=denominator > 0
    )
    present = support > 0
    return {
        "accuracy": float(true_positive.sum() / max(len(labels), 1)),
        "mean_class_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "n": int(len(labels)),
        "classes": list(classes),
        "confusion": matrix.tolist(),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        },
    }
