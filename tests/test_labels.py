"""Label mapping, one rule for every shape of label a user's file or a dataset can have: the ids that land in the
train split are checked, not only that loading runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import GLUE, SHARED_DATA

GO_EMOTIONS = SHARED_DATA / "go_emotions"
from lorakit.data import load_task_data
from lorakit.errors import UsageError
from lorakit.recipe import Recipe


def _jsonl(path: Path, labels: list) -> str:
    path.write_text("".join(json.dumps({"text": f"row {i}", "label": v}) + "\n" for i, v in enumerate(labels)))
    return str(path)


def _csv(path: Path, labels: list) -> str:
    path.write_text("text,label\n" + "".join(f"row {i},{v}\n" for i, v in enumerate(labels)))
    return str(path)


def _load(tmp_path: Path, train: list, evals: list | None = None, writer=_jsonl, **keys):
    suffix = ".jsonl" if writer is _jsonl else ".csv"
    recipe = Recipe(train_file=writer(tmp_path / f"train{suffix}", train),
                    validation_file=writer(tmp_path / f"eval{suffix}", evals if evals is not None else train),
                    text_column_names=["text"], **keys)
    return load_task_data(recipe)


# Label names taken from the data: every value maps through its name, numbers sorted as numbers.
FROM_DATA = [
    ("star ratings 1-5", [5, 1, 3, 2, 4, 1], ["1", "2", "3", "4", "5"], [4, 0, 2, 1, 3, 0]),
    ("labels 1/2", [2, 1, 1, 2], ["1", "2"], [1, 0, 0, 1]),
    ("ids 0..n-1", [2, 0, 1, 0], ["0", "1", "2"], [2, 0, 1, 0]),
    ("numbers sort as numbers", [10, 2, 10, 9], ["2", "9", "10"], [2, 0, 2, 1]),
    ("negative and float values", [-1, 0.5, -1, 0.5], ["-1", "0.5"], [0, 1, 0, 1]),
    ("strings", ["pos", "neg", "neutral", "pos"], ["neg", "neutral", "pos"], [2, 0, 1, 2]),
    ("booleans", [True, False, False, True], ["False", "True"], [1, 0, 0, 1]),
]


@pytest.mark.parametrize("writer", [_jsonl, _csv], ids=["jsonl", "csv"])
@pytest.mark.parametrize("values, names, ids", [c[1:] for c in FROM_DATA], ids=[c[0] for c in FROM_DATA])
def test_names_from_the_data_map_every_value_through_its_name(tmp_path, writer, values, names, ids):
    task = _load(tmp_path, values, writer=writer)
    assert task.label_names == names
    assert task.train["labels"] == ids
    assert task.eval["labels"] == ids


def test_an_eval_value_unseen_in_train_is_an_error_naming_it(tmp_path):
    with pytest.raises(UsageError, match=r"label 7 in eval row 1 is not in the task's label set \['1', '2'\]"):
        _load(tmp_path, [1, 2], [2, 7])


def test_given_names_take_integer_labels_as_ids(tmp_path):
    task = _load(tmp_path, [1, 0, 2, 2], label_names=["a", "b", "c"])
    assert task.label_names == ["a", "b", "c"] and task.train["labels"] == [1, 0, 2, 2]


def test_given_names_map_string_labels_through_them(tmp_path):
    task = _load(tmp_path, ["b", "a", "c"], label_names=["c", "b", "a"])
    assert task.train["labels"] == [1, 2, 0]


@pytest.mark.parametrize("writer", [_jsonl, _csv], ids=["jsonl", "csv"])
def test_given_names_and_an_id_out_of_range_is_an_error_naming_value_row_and_fix(tmp_path, writer):
    with pytest.raises(UsageError) as err:
        _load(tmp_path, [1, 2, 3, 5], writer=writer, label_names=["1", "2", "3", "4", "5"])
    message = str(err.value)
    assert message.startswith("label 5 in train row 3 is not a class id") and "0 to 4" in message
    assert "--label_names none" in message


def test_a_class_label_feature_keeps_its_ids(tmp_path):
    import datasets

    task = load_task_data(Recipe(dataset_name=str(GLUE), dataset_config_name="sst2", max_train_samples=40,
                                 max_eval_samples=8))
    source = datasets.load_dataset(str(GLUE), "sst2", split="train[:40]")
    assert task.label_names == ["negative", "positive"]
    assert task.train["labels"] == source["label"] and set(source["label"]) == {0, 1}


def test_a_list_label_in_a_single_label_task_is_an_error(tmp_path):
    with pytest.raises(UsageError, match=r"label \[1, 2\] in train row 1 is a list, but the task is single-label"):
        _load(tmp_path, [1, [1, 2], 2])


def test_a_missing_label_is_an_error_naming_its_row(tmp_path):
    with pytest.raises(UsageError, match="the label in train row 2 is missing"):
        _load(tmp_path, ["a", "b", None], label_names=["a", "b"])


# Multi-label: a list of ids or names per row (or a comma-separated string in a CSV) becomes a multi-hot vector.

def test_multi_label_names_in_lists_from_the_data(tmp_path):
    task = _load(tmp_path, [["joy", "love"], ["anger"], [], ["love"]], problem_type="multi_label_classification")
    assert task.label_names == ["anger", "joy", "love"]
    assert task.train["labels"] == [[0, 1, 1], [1, 0, 0], [0, 0, 0], [0, 0, 1]]


def test_multi_label_comma_separated_strings_in_a_csv(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('text,label\na,"joy,love"\nb,anger\nc," love , anger"\n')
    recipe = Recipe(train_file=str(path), validation_file=str(path), text_column_names=["text"],
                    problem_type="multi_label_classification", label_names=["anger", "joy", "love"])
    task = load_task_data(recipe)
    assert task.train["labels"] == [[0, 1, 1], [1, 0, 0], [1, 0, 1]]


def test_multi_label_integer_lists_from_the_data_are_names(tmp_path):
    task = _load(tmp_path, [[5, 1], [3], [1]], problem_type="multi_label_classification")
    assert task.label_names == ["1", "3", "5"] and task.train["labels"] == [[1, 0, 1], [0, 1, 0], [1, 0, 0]]


def test_multi_label_integer_lists_with_given_names_are_ids(tmp_path):
    task = _load(tmp_path, [[2, 0], [1]], problem_type="multi_label_classification", label_names=["a", "b", "c"])
    assert task.train["labels"] == [[1, 0, 1], [0, 1, 0]]


def test_multi_label_class_label_lists_of_go_emotions(tmp_path):
    import datasets

    task = load_task_data(Recipe(dataset_name=str(GO_EMOTIONS), dataset_config_name="simplified",
                                 text_column_names=["text"], label_column_name="labels",
                                 problem_type="multi_label_classification", max_train_samples=50,
                                 max_eval_samples=5))
    source = datasets.load_dataset(str(GO_EMOTIONS), "simplified", split="train[:50]")
    assert len(task.label_names) == 28 and task.label_names[27] == "neutral"
    hot = task.train["labels"]
    assert [[i for i, v in enumerate(row) if v] for row in hot] == [sorted(ids) for ids in source["labels"]]
    assert any(len(ids) > 1 for ids in source["labels"])  # the slice holds a row with several labels


def test_a_scalar_label_in_a_multi_label_task_is_an_error(tmp_path):
    with pytest.raises(UsageError, match=r"label 2 in train row 1 is a single value, but the task is multi-label"):
        _load(tmp_path, [[1], 2], problem_type="multi_label_classification")


def test_an_unknown_name_in_a_list_is_an_error_naming_it(tmp_path):
    with pytest.raises(UsageError, match=r"label 'glee' in eval row 0 is not in the task's label set"):
        _load(tmp_path, [["joy"], ["love"]], [["joy", "glee"]], problem_type="multi_label_classification")


# Regression: float targets.

def test_regression_targets_are_floats_under_one_name(tmp_path):
    task = _load(tmp_path, [0.5, 4, "3.25", 5.0], problem_type="regression")
    assert task.label_names == ["label"] and task.problem_type == "regression"
    assert task.train["labels"] == [0.5, 4.0, 3.25, 5.0]


def test_stsb_targets_are_its_scores():
    import datasets

    task = load_task_data(Recipe(dataset_name=str(GLUE), dataset_config_name="stsb", problem_type="regression",
                                 text_column_names=["sentence1", "sentence2"], max_train_samples=20,
                                 max_eval_samples=5))
    source = datasets.load_dataset(str(GLUE), "stsb", split="train[:20]")
    assert task.train["labels"] == pytest.approx(source["label"])


@pytest.mark.parametrize("value", ["high", True, None, "nan"])
def test_a_non_numeric_regression_target_is_an_error(tmp_path, value):
    with pytest.raises(UsageError, match=r"in train row 1 is not a number, but the task is a regression"):
        _load(tmp_path, [1.0, value, 2.0], problem_type="regression")


# Class weights, f1 and pos_label: checked and resolved once the label names are known.

def test_balanced_class_weights_are_inverse_frequencies_on_train(tmp_path):
    task = _load(tmp_path, ["a", "a", "a", "b", "c", "c"], ["a", "b", "c"], class_weights=["balanced"])
    n, k = 6, 3
    assert task.class_weights == pytest.approx([n / (k * 3), n / (k * 1), n / (k * 2)])


def test_balanced_pos_weight_is_negatives_over_positives_per_label(tmp_path):
    task = _load(tmp_path, [["x"], ["x", "y"], ["y"], ["x"]], problem_type="multi_label_classification",
                 class_weights=["balanced"])
    assert task.class_weights == pytest.approx([1 / 3, 2 / 2])


def test_explicit_class_weights_are_taken_as_given(tmp_path):
    task = _load(tmp_path, ["a", "b"], class_weights=["1", "2.5"])
    assert task.class_weights == [1.0, 2.5]


def test_class_weights_of_the_wrong_length_are_an_error(tmp_path):
    with pytest.raises(UsageError, match=r"class_weights holds 3 numbers but the task has 2 labels"):
        _load(tmp_path, ["a", "b"], class_weights=["1", "2", "3"])


def test_f1_beyond_two_classes_is_an_error_naming_the_alternatives(tmp_path):
    with pytest.raises(UsageError, match=r"f1 is the binary F1 of the positive class, but the task has 3 labels; "
                                         r"use f1_macro or f1_micro"):
        _load(tmp_path, ["a", "b", "c"], metrics=["accuracy", "f1"])


def test_pos_label_picks_the_class_f1_scores(tmp_path):
    assert _load(tmp_path, ["neg", "pos"], metrics=["f1"]).pos_label == 1
    assert _load(tmp_path, ["neg", "pos"], metrics=["f1"], pos_label="neg").pos_label == 0
    with pytest.raises(UsageError, match="pos_label 'yes' is not one of the labels"):
        _load(tmp_path, ["neg", "pos"], metrics=["f1"], pos_label="yes")
