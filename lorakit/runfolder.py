"""The run folder's contract: which files a run, a merged export and a Hub repo hold, and labels.json.

Every module that writes or reads such a folder asks this one (training, inference, export, hub, the ONNX
path), so the layout is decided in one place. It imports neither torch nor transformers: a process that only
predicts from an ONNX export reads the same labels.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

LABELS_FILE = "labels.json"
RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.json"
LOG_FILE = "log_history.json"
CURVE_FILE = "learning_curve.png"
CARD_FILE = "README.md"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MODEL_FILES = ("config.json", "model.safetensors")
TOKENIZER_FILE = "tokenizer_config.json"
# An ONNX export (export.py --format onnx): the graph, and the tokenizer as one `tokenizers` file.
ONNX_FILE = "model.onnx"
TOKENIZER_JSON = "tokenizer.json"
ONNX_FILES = (ONNX_FILE, TOKENIZER_JSON, LABELS_FILE)
# The train rows carved out for validation (validation_split_percentage), so that a resumed run keeps them.
VALIDATION_ROWS_FILE = "validation_rows.json"
# A labelled split scored once (the test step of training, or evaluate.py): rows, per-class report, plot.
PREDICTIONS_FILE = "predictions_test.csv"
CLASS_REPORT_FILE = "classification_report_test.md"
CONFUSION_FILE = "confusion_matrix_test.png"
SCATTER_FILE = "scatter_test.png"  # regression: predicted against gold

SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
REGRESSION = "regression"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)


def is_onnx_export(folder: Path) -> bool:
    """`folder` holds an ONNX export (its graph), to be run by lorakit.onnx rather than torch."""
    return (folder / ONNX_FILE).is_file()


def is_local_path(name: str | None) -> bool:
    """A path on this machine rather than a Hub id (it starts like a path, or it exists here)."""
    return bool(name) and (name.startswith((".", "/", "~")) or Path(name).expanduser().exists())


@dataclass
class LabelInfo:
    """What a trained classifier needs to read its inputs and name its outputs (labels.json).

    `label_names` are in output order: the classes of a single-label task, every label of a multi-label task, the
    one target of a regression. `threshold` is the multi-label decision threshold (None otherwise)."""

    label_names: list[str]
    text_columns: list[str]
    max_seq_length: int | None = None
    problem_type: str = SINGLE_LABEL
    threshold: float | None = None

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    def as_json(self) -> dict:
        data = {"label_names": list(self.label_names), "text_columns": list(self.text_columns),
                "max_seq_length": self.max_seq_length, "problem_type": self.problem_type}
        if self.threshold is not None:
            data["threshold"] = self.threshold
        return data


def config_labels(label_names: list[str], problem_type: str = SINGLE_LABEL) -> dict:
    """The label maps (and problem type) a transformers config carries, as from_pretrained keyword arguments."""
    return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)}, "problem_type": problem_type}


def write_labels(folder: Path, info: LabelInfo) -> None:
    (folder / LABELS_FILE).write_text(json.dumps(info.as_json(), indent=2) + "\n", encoding="utf-8")


def read_json(path: Path, what: str) -> dict:
    """A JSON object from `path`; a damaged file is a UsageError naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{what} {str(path)!r} is not valid JSON ({err}); restore it from the run that made "
                         "the folder") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what} {str(path)!r} should hold a JSON object; restore it from the run that made it")
    return data


def read_labels(folder: Path, *, required: bool = True) -> LabelInfo | None:
    """labels.json of `folder` (None when absent and not `required`); a damaged or incomplete file is a
    UsageError. Files written before problem_type existed are single-label."""
    path = folder / LABELS_FILE
    if not path.is_file():
        if required:
            raise UsageError(f"folder {str(folder)!r} is missing {LABELS_FILE}; pass a complete output folder of "
                             "train.py (copy all of its files)")
        return None
    data = read_json(path, "labels file")
    names = data.get("label_names")
    problem_type = data.get("problem_type") or SINGLE_LABEL
    least = 1 if problem_type == REGRESSION else 2
    if not isinstance(names, list) or len(names) < least or problem_type not in PROBLEM_TYPES:
        raise UsageError(f"labels file {str(path)!r} should list at least {least} label_names and a problem_type "
                         f"of {', '.join(PROBLEM_TYPES)}; restore it from the run that made the folder")
    return LabelInfo(label_names=[str(n) for n in names], text_columns=list(data.get("text_columns") or ["text"]),
                     max_seq_length=data.get("max_seq_length"), problem_type=problem_type,
                     threshold=data.get("threshold"))
