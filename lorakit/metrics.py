"""Classification metrics with scikit-learn (the `evaluate` package fetches metric scripts from the Hub)."""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def _f1(labels, preds, num_labels):
    # GLUE's F1 for MRPC is the binary F1 of the positive class; with more classes binary F1 is undefined.
    return f1_score(labels, preds, average="binary" if num_labels == 2 else "macro")


METRICS: dict[str, Callable[[np.ndarray, np.ndarray, int], float]] = {
    "accuracy": lambda labels, preds, n: accuracy_score(labels, preds),
    "f1": _f1,
    "f1_macro": lambda labels, preds, n: f1_score(labels, preds, average="macro"),
    "matthews_correlation": lambda labels, preds, n: matthews_corrcoef(labels, preds),
}


def compute(names: list[str], labels: np.ndarray, preds: np.ndarray, num_labels: int) -> dict[str, float]:
    """Each named metric of integer predictions against integer labels, as plain floats."""
    return {name: float(METRICS[name](labels, preds, num_labels)) for name in names}


def trainer_metrics(names: list[str], num_labels: int):
    """A `compute_metrics` for transformers.Trainer: argmax of the logits, then `compute`."""

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits, labels = eval_pred
        logits = logits[0] if isinstance(logits, tuple) else logits
        return compute(names, np.asarray(labels), np.asarray(logits).argmax(-1), num_labels)

    return compute_metrics
