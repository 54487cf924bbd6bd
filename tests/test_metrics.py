"""Metric functions against values computed by hand."""

import math

import numpy as np
import pytest

from lorakit.metrics import compute, trainer_metrics

LABELS = np.array([1, 1, 1, 0, 0, 0, 1, 0])
PREDS = np.array([1, 1, 0, 0, 0, 1, 1, 0])  # TP=3 FN=1 TN=3 FP=1


def test_accuracy():
    assert compute(["accuracy"], LABELS, PREDS, 2)["accuracy"] == pytest.approx(6 / 8)


def test_binary_f1_is_the_positive_class():
    precision, recall = 3 / 4, 3 / 4
    assert compute(["f1"], LABELS, PREDS, 2)["f1"] == pytest.approx(2 * precision * recall / (precision + recall))


def test_matthews_correlation():
    tp, tn, fp, fn = 3, 3, 1, 1
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert compute(["matthews_correlation"], LABELS, PREDS, 2)["matthews_correlation"] == pytest.approx(mcc)
    assert mcc == pytest.approx(0.5)


def test_macro_f1_on_three_classes():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    # per class F1: class0 P=1/2 R=1/2 -> 0.5; class1 P=2/3 R=1 -> 0.8; class2 P=1 R=1/2 -> 2/3
    expected = (0.5 + 0.8 + 2 / 3) / 3
    assert compute(["f1_macro"], labels, preds, 3)["f1_macro"] == pytest.approx(expected)
    assert compute(["f1"], labels, preds, 3)["f1"] == pytest.approx(expected)  # f1 is macro beyond 2 classes


def test_trainer_metrics_takes_argmax_of_logits():
    logits = np.array([[2.0, -1.0], [0.1, 0.3], [5.0, 4.0], [-1.0, 1.0]])
    labels = np.array([0, 1, 1, 1])
    out = trainer_metrics(["accuracy", "matthews_correlation"], 2)((logits, labels))
    assert out["accuracy"] == pytest.approx(3 / 4)
    assert set(out) == {"accuracy", "matthews_correlation"}
