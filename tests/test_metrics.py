"""Metric functions against values computed by hand (or by NumPy for the correlations)."""

import math

import numpy as np
import pytest

from lorakit.metrics import METRICS, compute, decide, trainer_metrics
from lorakit.recipe import TASK_METRICS

LABELS = np.array([1, 1, 1, 0, 0, 0, 1, 0])
PREDS = np.array([1, 1, 0, 0, 0, 1, 1, 0])  # TP=3 FN=1 TN=3 FP=1


def test_accuracy():
    assert compute(["accuracy"], LABELS, PREDS)["accuracy"] == pytest.approx(6 / 8)


def test_binary_f1_is_the_positive_class():
    precision, recall = 3 / 4, 3 / 4
    assert compute(["f1"], LABELS, PREDS)["f1"] == pytest.approx(2 * precision * recall / (precision + recall))


def test_matthews_correlation():
    tp, tn, fp, fn = 3, 3, 1, 1
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert compute(["matthews_correlation"], LABELS, PREDS)["matthews_correlation"] == pytest.approx(mcc)
    assert mcc == pytest.approx(0.5)


def test_binary_f1_of_the_other_class_with_pos_label_0():
    # class 0 as the positive one: TP=3 (0 predicted 0), FP=1, FN=1
    assert compute(["f1"], LABELS, PREDS, pos_label=0)["f1"] == pytest.approx(3 / 4)


def test_macro_and_micro_f1_on_three_classes():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    # per class F1: class0 P=1/2 R=1/2 -> 0.5; class1 P=2/3 R=1 -> 0.8; class2 P=1 R=1/2 -> 2/3
    out = compute(["f1_macro", "f1_micro"], labels, preds)
    assert out["f1_macro"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert out["f1_micro"] == pytest.approx(4 / 6)  # single-label micro-F1 is accuracy


def test_multi_label_metrics_on_multi_hot_rows():
    labels = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    preds = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 1]])
    out = compute(["f1_micro", "f1_macro", "exact_match"], labels, preds)
    # over every cell TP=5 FP=1 FN=1: micro-F1 = 2*5 / (2*5 + 1 + 1)
    assert out["f1_micro"] == pytest.approx(10 / 12)
    # per label: 0: TP2 FP1 -> 0.8; 1: TP2 -> 1.0; 2: TP1 FN1 -> 2/3
    assert out["f1_macro"] == pytest.approx((0.8 + 1.0 + 2 / 3) / 3)
    assert out["exact_match"] == pytest.approx(2 / 4)


def test_regression_correlations():
    labels = np.array([0.0, 1.0, 2.5, 4.0, 5.0])
    preds = np.array([0.3, 0.9, 3.5, 3.0, 4.9])
    out = compute(["pearson", "spearmanr"], labels, preds)
    assert out["pearson"] == pytest.approx(np.corrcoef(labels, preds)[0, 1])
    ranks = np.array([1, 2, 4, 3, 5])  # of preds; the labels' ranks are 1..5
    assert out["spearmanr"] == pytest.approx(np.corrcoef(np.arange(1, 6), ranks)[0, 1])


def test_every_metric_a_recipe_may_name_is_computed():
    assert {m for names in TASK_METRICS.values() for m in names} == set(METRICS)


def test_decide_per_problem_type():
    logits = np.array([[2.0, -1.0, 0.1], [-3.0, 0.5, 0.3]])
    assert decide(logits).tolist() == [0, 1]
    assert decide(logits, "multi_label_classification").tolist() == [[1, 0, 1], [0, 1, 1]]
    # sigmoid(0.3) = 0.574 and sigmoid(0.1) = 0.525: under a threshold of 0.55 only the first stays
    assert decide(logits, "multi_label_classification", 0.55).tolist() == [[1, 0, 0], [0, 1, 1]]
    assert decide(np.array([[1.5], [-0.2]]), "regression").tolist() == [1.5, -0.2]


def test_trainer_metrics_takes_argmax_of_logits():
    logits = np.array([[2.0, -1.0], [0.1, 0.3], [5.0, 4.0], [-1.0, 1.0]])
    labels = np.array([0, 1, 1, 1])
    out = trainer_metrics(["accuracy", "matthews_correlation"])((logits, labels))
    assert out["accuracy"] == pytest.approx(3 / 4)
    assert set(out) == {"accuracy", "matthews_correlation"}


def test_trainer_metrics_for_multi_label_take_float_targets():
    logits = np.array([[2.0, -1.0], [-2.0, 1.0]])
    labels = np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    out = trainer_metrics(["exact_match", "f1_micro"], "multi_label_classification")((logits, labels))
    assert out == {"exact_match": pytest.approx(0.5), "f1_micro": pytest.approx(2 * 2 / (2 * 2 + 1))}
