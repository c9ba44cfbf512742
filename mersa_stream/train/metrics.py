"""The paper's four figures (accuracy = WA, weighted F1, macro F1, balanced accuracy = UA) and the
confusion matrix, from label indices; with the class probabilities also the expected calibration
error (`ece`, mersa_stream/train/calibration.py)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..config import METRICS  # the four, as [train] select offers them
from .calibration import expected_calibration_error


def compute_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str],
                    probs=None) -> dict:
    """`probs` (N, C), optional: the probabilities the predictions came from; adds "ece"."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    k = list(range(len(labels)))
    if len(y_true) == 0:
        out = {m: float("nan") for m in METRICS} | {"count": 0, "labels": list(labels),
                                                     "confusion": [[0] * len(k) for _ in k]}
        if probs is not None:
            out["ece"] = float("nan")
        return out
    present = sorted(set(y_true.tolist()))  # balanced accuracy over the classes that occur
    recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in present]
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=k, average="weighted",
                                      zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro",
                                   zero_division=0)),
        "balanced_accuracy": float(np.mean(recalls)),
        "count": int(len(y_true)),
        "labels": list(labels),
        "confusion": confusion_matrix(y_true, y_pred, labels=k).tolist(),
    }
    if probs is not None:
        out["ece"] = expected_calibration_error(probs, y_true)
    return out


def format_confusion(metrics: dict) -> str:
    labels = metrics["labels"]
    width = max(8, *(len(x) for x in labels)) + 1
    lines = ["true \\ pred".ljust(width) + "".join(x.rjust(width) for x in labels)]
    for label, row in zip(labels, metrics["confusion"]):
        lines.append(label.ljust(width) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


def format_metrics(metrics: dict) -> str:
    shown = METRICS + (("ece",) if "ece" in metrics else ())
    return "  ".join(f"{m} {metrics[m]:.3f}" for m in shown) + f"  (n={metrics['count']})"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std(ddof=0))
