"""Labels: from a dataset's label column to the targets a model trains on, by one rule for every shape of label.

- Names taken from the data (no recipe `label_names`, no ClassLabel feature): every value is a name, whatever its
  type. The names are the distinct values, sorted numerically when they are all numbers (else as text), so that
  ids are stable and natural: star ratings 1-5 become ids 0-4, labels 1/2 ids 0/1, booleans False/True 0/1.
- Names given (recipe `label_names`, or the dataset's ClassLabel feature): an integer label is an id into them,
  and one out of range is an error; any other label is a name.

Targets by problem type: class ids (single-label), multi-hot float vectors over the names (multi-label: each row
a list of ids or names, or a comma-separated string as a CSV holds it), floats (regression, one target).
"""

from __future__ import annotations

import math
import numbers

import datasets
from datasets import ClassLabel, Dataset

from .errors import UsageError
from .predictions import DEFAULT_THRESHOLD
from .recipe import Recipe
from .runfolder import MULTI_LABEL, REGRESSION, LabelInfo


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


def _members(value, split: str, row: int) -> list:
    """A multi-label task's labels of one row: a list, or a comma-separated string; a single non-text value or a
    missing one is a UsageError."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise UsageError(f"{_where(value, split, row)} is a single value, but the task is multi-label; give each row a "
                     "list of labels (in a CSV, a comma-separated string), or set problem_type: "
                     "single_label_classification")


def _target(value, split: str, row: int) -> float:
    """A regression target: a finite number (or text that reads as one); anything else is a UsageError."""
    try:
        number = float(value) if _is_number(value) or isinstance(value, str) else None
    except ValueError:
        number = None
    if number is None or not math.isfinite(number):
        raise UsageError(f"{_where(value, split, row)} is not a number, but the task is a regression; give every "
                         "row a numeric target, or set problem_type to a classification")
    return number


def _feature_names(feature) -> list[str] | None:
    """The names a ClassLabel feature carries (for multi-label, a list of ClassLabel), or None."""
    if isinstance(feature, datasets.List):
        feature = feature.feature
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def label_names(recipe: Recipe, train: Dataset) -> tuple[list[str], bool]:
    """The task's label names in id order (a regression's one target name), and whether they were given (recipe
    or ClassLabel feature) rather than taken from the train split's values."""
    column = recipe.label_column_name
    if recipe.problem_type == REGRESSION:
        return list(recipe.label_names or [column]), True
    if recipe.label_names:
        return list(recipe.label_names), True
    names = _feature_names(train.features[column])
    if names is not None:
        return names, True
    if recipe.problem_type == MULTI_LABEL:
        values = {v for row, value in enumerate(train[column]) for v in _members(value, "train", row)}
    else:
        values = {_scalar(v, "train", row) for row, v in enumerate(train[column])}
    if all(_is_number(v) for v in values):
        ordered = sorted(values)
    else:
        ordered = sorted(values, key=str)
    return list(dict.fromkeys(_name(v) for v in ordered)), False


def encode(split: Dataset, split_name: str, recipe: Recipe, names: list[str], given: bool) -> Dataset:
    """The split with its label column replaced by `labels`: class ids in [0, len(names)) (single-label),
    multi-hot float vectors (multi-label) or floats (regression). A label outside the set, or of the wrong shape
    for the problem type, is a UsageError naming it and its row. A `map`, so that datasets caches it beside the
    source and the tokenisation after it."""
    column = recipe.label_column_name
    label2id = {name: i for i, name in enumerate(names)}

    def class_id(value, row: int) -> int:
        if given and _is_int(value):
            if not 0 <= value < len(names):
                raise UsageError(f"{_where(value, split_name, row)} is not a class id: with the label names "
                                 f"{names} an integer label is an id from 0 to {len(names) - 1}; relabel the data, "
                                 "or unset label_names (--label_names none) to name the classes by their values")
            return int(value)
        if isinstance(value, (list, tuple)) or value is None:
            raise UsageError(f"{_where(value, split_name, row)} should be a label id or name; fix the data")
        label = label2id.get(_name(value))
        if label is None:
            raise UsageError(f"{_where(value, split_name, row)} is not in the task's label set {names}; fix the "
                             "data or set label_names in the recipe")
        return label

    def multi_hot(value, row: int) -> list[float]:
        hot = [0.0] * len(names)
        for member in _members(value, split_name, row):
            hot[class_id(member, row)] = 1.0
        return hot

    if recipe.problem_type == MULTI_LABEL:
        convert, feature = multi_hot, datasets.List(datasets.Value("float32"), length=len(names))
    elif recipe.problem_type == REGRESSION:
        convert, feature = (lambda v, r: _target(v, split_name, r)), datasets.Value("float32")
    else:
        convert, feature = (lambda v, r: class_id(_scalar(v, split_name, r), r)), datasets.Value("int64")

    def to_labels(batch, rows):
        return {"labels": [convert(v, r) for v, r in zip(batch[column], rows)]}

    features = split.features.copy()
    del features[column]
    features["labels"] = feature
    return split.map(to_labels, batched=True, with_indices=True, remove_columns=[column], features=features,
                     desc=f"Checking {split_name} labels")


def check_task(recipe: Recipe, names: list[str]) -> None:
    """The label keys that need the label names: f1's two classes and pos_label, class_weights' length."""
    if "f1" in recipe.metrics and len(names) != 2:
        raise UsageError(f"metric f1 is the binary F1 of the positive class, but the task has {len(names)} labels; "
                         "use f1_macro or f1_micro")
    if recipe.pos_label is not None and recipe.pos_label not in names:
        raise UsageError(f"pos_label {recipe.pos_label!r} is not one of the labels {names}; name one of them")
    weights = recipe.class_weights
    if weights and weights != ["balanced"] and len(weights) != len(names):
        raise UsageError(f"class_weights holds {len(weights)} numbers but the task has {len(names)} labels "
                         f"{names}; give one weight per label, in this order, or balanced")


def pos_label_id(recipe: Recipe, names: list[str]) -> int:
    """The id of the class metric f1 scores: pos_label's, else the second label's."""
    return names.index(recipe.pos_label) if recipe.pos_label is not None else 1


def class_weights(recipe: Recipe, train: Dataset, names: list[str]) -> list[float] | None:
    """The loss weights the recipe asks for, as numbers: its own, or for `balanced` computed on the (encoded)
    train split: n / (k * n_c) per class (scikit-learn's `balanced`), or negatives / positives per label for
    multi-label (BCE's pos_weight). A class with no train row cannot be balanced: UsageError."""
    if not recipe.class_weights:
        return None
    if recipe.class_weights != ["balanced"]:
        return [float(w) for w in recipe.class_weights]
    import numpy as np

    labels = np.asarray(train["labels"])
    if recipe.problem_type == MULTI_LABEL:
        counts = labels.sum(axis=0)
    else:
        counts = np.bincount(labels, minlength=len(names))
    empty = [names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise UsageError(f"class_weights balanced needs every label in the train split, but {empty[0]!r} has no "
                         "row there; give the weights as numbers, or more train rows")
    if recipe.problem_type == MULTI_LABEL:
        return [float(w) for w in (len(labels) - counts) / counts]
    from sklearn.utils.class_weight import compute_class_weight

    return [float(w) for w in compute_class_weight("balanced", classes=np.arange(len(names)), y=labels)]


def decision_threshold(recipe: Recipe) -> float | None:
    """The multi-label decision threshold (the recipe's, else 0.5); None for the other problem types."""
    if recipe.problem_type != MULTI_LABEL:
        return None
    return recipe.threshold if recipe.threshold is not None else DEFAULT_THRESHOLD


def label_info(recipe: Recipe, names: list[str]) -> LabelInfo:
    """labels.json for a run of `recipe` (lorakit.runfolder owns the file)."""
    return LabelInfo(label_names=list(names), text_columns=list(recipe.text_columns),
                     max_seq_length=recipe.max_seq_length, problem_type=recipe.problem_type,
                     threshold=decision_threshold(recipe))


def with_class_weights(resolved, weights: list[float] | None):
    """The resolved recipe (lorakit.recipe.Resolved) with class_weights as the numbers the loss uses, so that
    recipe.yaml records them rather than `balanced`."""
    import dataclasses

    if not weights:
        return resolved
    return dataclasses.replace(resolved, recipe=dataclasses.replace(resolved.recipe, class_weights=list(weights)))
