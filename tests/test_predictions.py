"""Predictions from logits and their printing, per problem type (NumPy only: the torch and ONNX paths share it)."""

from __future__ import annotations

import numpy as np
import pytest

from lorakit.predictions import format_line, from_logits, sigmoid
from lorakit.runfolder import LabelInfo
from lorakit.textio import Row

ROWS = [Row("first", None), Row("second", None)]


def test_single_label_accepts_label_names_alone():
    preds = from_logits(ROWS, np.array([[0.0, 1.0], [2.0, 0.0]]), ["neg", "pos"], [False, False])
    assert [p.label for p in preds] == ["pos", "neg"]
    assert preds[0].score == pytest.approx(np.exp(1) / (1 + np.exp(1)))
    assert format_line(preds[0], None) == f"pos\t{preds[0].score:.4f}\tfirst"
    assert set(preds[0].as_record()) == {"text", "label", "score", "scores"}


def test_regression_prints_the_score_and_no_label():
    info = LabelInfo(["similarity"], ["a", "b"], problem_type="regression")
    rows = [Row("A man plays.", "A man is playing.", line=3)]
    (pred,) = from_logits(rows, np.array([[3.71828]]), info, [True])
    assert pred.score == pytest.approx(3.71828) and pred.label is None
    assert format_line(pred, None) == "3.7183\tA man plays.\tA man is playing."
    assert pred.as_record() == {"text": "A man plays.", "text_pair": "A man is playing.",
                                "score": pytest.approx(3.71828), "line": 3, "truncated": True}


def test_multi_label_lists_every_label_over_the_threshold_most_probable_first():
    info = LabelInfo(["anger", "joy", "love"], ["text"], problem_type="multi_label_classification", threshold=0.5)
    logits = np.array([[-2.0, 0.5, 1.5], [-1.0, -0.2, -3.0]])
    preds = from_logits(ROWS, logits, info, [False, False])
    p = sigmoid(logits)
    assert preds[0].labels == [("love", pytest.approx(p[0, 2])), ("joy", pytest.approx(p[0, 1]))]
    assert preds[1].labels == []
    assert format_line(preds[0], None) == f"love\t{p[0, 2]:.4f}\tjoy\t{p[0, 1]:.4f}\tfirst"
    assert format_line(preds[1], None) == "second"
    record = preds[0].as_record()
    assert [x["label"] for x in record["labels"]] == ["love", "joy"] and "label" not in record
    assert record["scores"]["anger"] == pytest.approx(p[0, 0])
    # a threshold given to from_logits overrides labels.json's
    low = from_logits(ROWS, logits, info, [False, False], threshold=0.4)
    assert [label for label, _ in low[1].labels] == ["joy"]  # sigmoid(-0.2) = 0.45


def test_sigmoid_is_stable_and_right():
    assert sigmoid(np.array([-1000.0, 0.0, 1000.0])).tolist() == [0.0, 0.5, 1.0]
    assert sigmoid(np.array([1.0]))[0] == pytest.approx(1 / (1 + np.exp(-1)))
