"""Evaluation metrics with scikit-learn and SciPy (the `evaluate` package fetches metric scripts from the Hub).

Which metrics each problem type may report is decided in lorakit.recipe (TASK_METRICS); every name there is
computed here. Every metric is higher-is-better, as the sweep's "best" and Trainer's best checkpoint assume.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .predictions import DEFAULT_THRESHOLD, sigmoid
from .runfolder import MULTI_LABEL, REGRESSION, SINGLE_LABEL


def _pearson(labels, preds, pos_label):
    from scipy.stats import pearsonr

    return pearsonr(preds, labels).statistic


def _spearman(labels, preds, pos_label):
    from scipy.stats import spearmanr

    return spearmanr(preds, labels).statistic


# Each takes (labels, predictions, pos_label): class ids, multi-hot rows, or numbers by problem type.
METRICS: dict[str, Callable[[np.ndarray, np.ndarray, int], float]] = {
    "accuracy": lambda labels, preds, pos: accuracy_score(labels, preds),
    # GLUE's F1 for MRPC: the binary F1 of the positive class (lorakit.labels refuses it beyond two classes).
    "f1": lambda labels, preds, pos: f1_score(labels, preds, average="binary", pos_label=pos),
    "f1_macro": lambda labels, preds, pos: f1_score(labels, preds, average="macro", zero_division=0),
    "f1_micro": lambda labels, preds, pos: f1_score(labels, preds, average="micro", zero_division=0),
    "matthews_correlation": lambda labels, preds, pos: matthews_corrcoef(labels, preds),
    # Subset accuracy: a row counts when its predicted label set equals the true one (scikit-learn's accuracy on
    # multi-hot rows).
    "exact_match": lambda labels, preds, pos: accuracy_score(labels, preds),
    "pearson": _pearson,
    "spearmanr": _spearman,
}


def compute(names: list[str], labels: np.ndarray, preds: np.ndarray, pos_label: int = 1) -> dict[str, float]:
    """Each named metric of the predictions against the labels, as plain floats."""
    return {name: float(METRICS[name](labels, preds, pos_label)) for name in names}


def decide(logits: np.ndarray, problem_type: str = SINGLE_LABEL, threshold: float | None = None) -> np.ndarray:
    """The model's answers from its logits: the argmax class (single-label), multi-hot rows of the labels whose
    probability exceeds `threshold` (multi-label; 0.5 by default), the one output (regression)."""
    logits = np.asarray(logits)
    if problem_type == REGRESSION:
        return logits.reshape(len(logits), -1)[:, 0]
    if problem_type == MULTI_LABEL:
        return (sigmoid(logits) > (DEFAULT_THRESHOLD if threshold is None else threshold)).astype(np.int64)
    return logits.argmax(-1)


def trainer_metrics(names: list[str], problem_type: str = SINGLE_LABEL, *, pos_label: int = 1,
                    threshold: float | None = None):
    """A `compute_metrics` for transformers.Trainer: `decide` from the logits, then `compute`."""

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits, labels = eval_pred
        logits = logits[0] if isinstance(logits, tuple) else logits
        labels = np.asarray(labels)
        if problem_type == MULTI_LABEL:
            labels = labels.astype(np.int64)
        return compute(names, labels, decide(logits, problem_type, threshold), pos_label)

    return compute_metrics
