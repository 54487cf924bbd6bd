"""Label mapping, one rule for every shape of label a user's file or a dataset can have: the ids that land in the
train split are checked, not only that loading runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import GLUE
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
