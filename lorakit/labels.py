"""Labels: from a dataset's label column to the targets a model trains on, by one rule for every shape of label.

- Names taken from the data (no recipe `label_names`, no ClassLabel feature): every value is a name, whatever its
  type. The names are the distinct values, sorted numerically when they are all numbers (else as text), so that
  ids are stable and natural: star ratings 1-5 become ids 0-4, labels 1/2 ids 0/1, booleans False/True 0/1.
- Names given (recipe `label_names`, or the dataset's ClassLabel feature): an integer label is an id into them,
  and one out of range is an error; any other label is a name.
"""

from __future__ import annotations

import numbers

import datasets
from datasets import ClassLabel, Dataset

from .errors import UsageError
from .recipe import Recipe


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return _is_number(value) and float(value).is_integer()


def _name(value) -> str:
    """A value's label name; 2.0 is named 2, as a column of integers read with a gap (a float column) has it."""
    return str(int(value)) if _is_int(value) and isinstance(value, float) else str(value)


def _where(value, split: str, row: int) -> str:
    return f"label {value!r} in {split} row {row}"


def _scalar(value, split: str, row: int):
    """A single-label task's label; a list or a missing value is a UsageError."""
    if value is None:
        raise UsageError(f"the label in {split} row {row} is missing; give every row a label")
    if isinstance(value, (list, tuple)):
        raise UsageError(f"{_where(value, split, row)} is a list, but the task is single-label; give one label per "
                         "row, or set problem_type: multi_label_classification")
    return value


def _feature_names(feature) -> list[str] | None:
    """The names a ClassLabel feature carries, or None."""
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def label_names(recipe: Recipe, train: Dataset) -> tuple[list[str], bool]:
    """The task's label names in id order, and whether they were given (recipe or ClassLabel feature) rather than
    taken from the train split's values."""
    if recipe.label_names:
        return list(recipe.label_names), True
    names = _feature_names(train.features[recipe.label_column_name])
    if names is not None:
        return names, True
    values = {_scalar(v, "train", row) for row, v in enumerate(train[recipe.label_column_name])}
    if all(_is_number(v) for v in values):
        ordered = sorted(values)
    else:
        ordered = sorted(values, key=str)
    return list(dict.fromkeys(_name(v) for v in ordered)), False


def encode(split: Dataset, split_name: str, recipe: Recipe, names: list[str], given: bool) -> Dataset:
    """The split with its label column replaced by `labels`: class ids in [0, len(names)). A label outside the set
    is a UsageError naming it and its row. A `map`, so that datasets caches it beside the source and the
    tokenisation after it."""
    column = recipe.label_column_name
    label2id = {name: i for i, name in enumerate(names)}

    def class_id(value, row: int) -> int:
        if given and _is_int(value):
            if not 0 <= value < len(names):
                raise UsageError(f"{_where(value, split_name, row)} is not a class id: with the label names "
                                 f"{names} an integer label is an id from 0 to {len(names) - 1}; relabel the data, "
                                 "or unset label_names (--label_names none) to name the classes by their values")
            return int(value)
        label = label2id.get(_name(value))
        if label is None:
            raise UsageError(f"{_where(value, split_name, row)} is not in the task's label set {names}; fix the "
                             "data or set label_names in the recipe")
        return label

    def to_labels(batch, rows):
        return {"labels": [class_id(_scalar(v, split_name, r), r) for v, r in zip(batch[column], rows)]}

    features = split.features.copy()
    del features[column]
    features["labels"] = datasets.Value("int64")
    return split.map(to_labels, batched=True, with_indices=True, remove_columns=[column], features=features,
                     desc=f"Checking {split_name} labels")
