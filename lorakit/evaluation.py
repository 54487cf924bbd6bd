"""Scoring a trained classifier on labelled rows, once: metrics, a per-class report, a predictions file, a plot.

Training scores its test split (`test_split` / `test_file`) after the last epoch; score.py scores an adapter
already trained on any labelled split or file. Both go through `score` and `write_files`, so both write the same
files (named in lorakit.runfolder) with the same numbers. The metrics are lorakit.metrics', as during training.

Also here: the other evaluation decisions of a run that are not the Trainer's own (the validation rows saved for
a resume, early stopping and what metrics.json says about it).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import metrics as metrics_lib
from .errors import UsageError
from .fileio import write_json_atomic
from .predictions import softmax
from .runfolder import (CLASS_REPORT_FILE, CONFUSION_FILE, MULTI_LABEL, PREDICTIONS_FILE, REGRESSION, SCATTER_FILE,
                        SINGLE_LABEL, VALIDATION_ROWS_FILE, LabelInfo)

PREFIX = "test"  # metrics.json keys of the scored split: test_accuracy, test_report, ...


@dataclass
class Scored:
    """A labelled split scored: per row its text(s), gold label id and the model's logits; the flat metrics
    (test_<metric>, test_rows, test_report, test_confusion_matrix) that go into metrics.json."""

    texts: list[tuple[str, ...]]
    gold: np.ndarray
    logits: np.ndarray
    info: LabelInfo
    metrics: dict


def score(texts: list[tuple[str, ...]], gold: np.ndarray, logits: np.ndarray, info: LabelInfo,
          metric_names: list[str], pos_label: int = 1) -> Scored:
    """Score `logits` (one row per text) against the `gold` targets (lorakit.labels: class ids, multi-hot rows or
    numbers) with the named metrics (lorakit.metrics, `pos_label` for f1), as training evaluates; plus sklearn's
    per-class (multi-label: per-label) report, and for single-label the confusion matrix."""
    gold, logits = np.asarray(gold), np.asarray(logits, dtype=np.float32)
    if info.problem_type == MULTI_LABEL:
        gold = gold.astype(np.int64)
    predicted = metrics_lib.decide(logits, info.problem_type, info.threshold)
    values = metrics_lib.compute(metric_names, gold, predicted, pos_label)
    metrics = {**{f"{PREFIX}_{k}": v for k, v in values.items()}, f"{PREFIX}_rows": int(len(gold))}
    metrics.update(_SCORERS[info.problem_type](gold, predicted, info))
    return Scored(texts=texts, gold=gold, logits=logits, info=info, metrics=metrics)


def _regression(gold: np.ndarray, predicted: np.ndarray, info: LabelInfo) -> dict:
    return {}  # the metrics (pearson, spearmanr) are all there is; the scatter plot shows the rest


def _multi_label(gold: np.ndarray, predicted: np.ndarray, info: LabelInfo) -> dict:
    from sklearn.metrics import classification_report

    report = classification_report(gold, predicted, target_names=info.label_names, output_dict=True,
                                   zero_division=0)
    return {f"{PREFIX}_report": _plain(report)}


def _single_label(gold: np.ndarray, predicted: np.ndarray, info: LabelInfo) -> dict:
    from sklearn.metrics import classification_report, confusion_matrix

    count = len(info.label_names)
    report = classification_report(gold, predicted, labels=list(range(count)), target_names=info.label_names,
                                   output_dict=True, zero_division=0)
    matrix = confusion_matrix(gold, predicted, labels=list(range(count)))
    return {f"{PREFIX}_report": _plain(report), f"{PREFIX}_confusion_matrix": matrix.tolist()}



def _plain(value):
    """sklearn's report with NumPy scalars turned into JSON's numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value.item() if isinstance(value, np.generic) else value


def write_files(folder: Path, scored: Scored) -> None:
    """Write the predictions file, the report and the plot of the problem type into `folder` (metrics.json is
    the caller's)."""
    _WRITERS[scored.info.problem_type](folder, scored)


def _write_single_label(folder: Path, scored: Scored) -> None:
    """Predictions (CSV: text(, text_pair), gold, predicted, probability), the per-class report as a Markdown
    table, the confusion-matrix plot."""
    names = scored.info.label_names
    probs = softmax(scored.logits)
    predicted = probs.argmax(-1)
    with (folder / PREDICTIONS_FILE).open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*_text_header(scored), "gold", "predicted", "probability"])
        for texts, gold, best, p in zip(scored.texts, scored.gold.tolist(), predicted.tolist(), probs):
            writer.writerow([*texts, names[gold], names[best], f"{p[best]:.6f}"])
    (folder / CLASS_REPORT_FILE).write_text(report_table(scored.metrics[f"{PREFIX}_report"]), encoding="utf-8")
    plot_confusion(np.asarray(scored.metrics[f"{PREFIX}_confusion_matrix"]), names, folder / CONFUSION_FILE)


def _write_multi_label(folder: Path, scored: Scored) -> None:
    """Predictions (CSV: text(, text_pair), gold and predicted labels joined by ';', the predicted labels'
    probabilities likewise) and the per-label report as a Markdown table."""
    from .predictions import sigmoid

    names = scored.info.label_names
    probs = sigmoid(scored.logits)
    predicted = metrics_lib.decide(scored.logits, MULTI_LABEL, scored.info.threshold)
    with (folder / PREDICTIONS_FILE).open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*_text_header(scored), "gold", "predicted", "probability"])
        for texts, gold, hot, p in zip(scored.texts, scored.gold, predicted, probs):
            chosen = np.flatnonzero(hot)
            writer.writerow([*texts, ";".join(names[i] for i in np.flatnonzero(gold)),
                             ";".join(names[i] for i in chosen), ";".join(f"{p[i]:.6f}" for i in chosen)])
    (folder / CLASS_REPORT_FILE).write_text(report_table(scored.metrics[f"{PREFIX}_report"]), encoding="utf-8")


def _write_regression(folder: Path, scored: Scored) -> None:
    """Predictions (CSV: text(, text_pair), gold, predicted score) and the predicted-against-gold scatter plot."""
    predicted = metrics_lib.decide(scored.logits, REGRESSION)
    with (folder / PREDICTIONS_FILE).open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*_text_header(scored), "gold", "predicted"])
        for texts, gold, value in zip(scored.texts, scored.gold.tolist(), predicted.tolist()):
            writer.writerow([*texts, f"{gold:.6g}", f"{value:.6f}"])
    plot_scatter(scored.gold, predicted, scored.info.label_names[0], folder / SCATTER_FILE)


def _text_header(scored: Scored) -> list[str]:
    return ["text", "text_pair"][:len(scored.texts[0])] if scored.texts else ["text"]


def plot_scatter(gold: np.ndarray, predicted: np.ndarray, name: str, path: Path) -> None:
    """Predicted against gold scores, one point per row, with the diagonal where they would be equal."""
    from matplotlib.figure import Figure  # no pyplot: see plot_confusion

    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.scatter(gold, predicted, s=8, alpha=0.5)
    low, high = float(min(gold.min(), predicted.min())), float(max(gold.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="grey", linewidth=1)
    ax.set_xlabel(f"gold {name}")
    ax.set_ylabel(f"predicted {name}")
    ax.set_title(f"predicted against gold ({len(gold)} rows)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# Per problem type (lorakit.runfolder): what is scored beside the metrics, and which files show it.
_SCORERS = {SINGLE_LABEL: _single_label, MULTI_LABEL: _multi_label, REGRESSION: _regression}
_WRITERS = {SINGLE_LABEL: _write_single_label, MULTI_LABEL: _write_multi_label, REGRESSION: _write_regression}


def report_table(report: dict) -> str:
    """sklearn's classification_report (output_dict) as a Markdown table: one row per class, then the averages."""
    lines = ["| label | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for label, row in report.items():
        if label == "accuracy":  # a bare number: accuracy over every row
            continue
        lines.append(f"| {label} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1-score']:.4f} | "
                     f"{int(row['support'])} |")
    if "accuracy" in report:
        lines.append(f"\naccuracy: {report['accuracy']:.4f}")
    return "\n".join(lines) + "\n"


def plot_confusion(matrix: np.ndarray, names: list[str], path: Path) -> None:
    """Counts of gold (rows) against predicted (columns) labels, as a PNG."""
    # A Figure alone draws with Agg: no display, no pyplot, no global backend (sklearn's ConfusionMatrixDisplay
    # imports pyplot).
    from matplotlib.figure import Figure

    side = 2.5 + 0.6 * len(names)
    fig = Figure(figsize=(side + 1, side))
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    ticks = list(range(len(names)))
    ax.set_xticks(ticks, names, rotation=45, ha="right")
    ax.set_yticks(ticks, names)
    middle = matrix.max() / 2 if matrix.size else 0
    for i in ticks:
        for j in ticks:
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                    color="white" if matrix[i, j] > middle else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"confusion matrix ({int(matrix.sum())} rows)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------------------------------------------
# The test step of training

def test_step(trainer, tokenized, task_data, recipe) -> Scored | None:
    """Score the trainer's model (the kept checkpoint, after load_best_model_at_end) on the run's test split, or
    None without one: `tokenized.test` is what the model reads, `task_data.test` the same rows with their texts
    and labels. Every process joins in (Trainer gathers the predictions)."""
    if task_data.test is None:
        return None
    from .labels import label_info

    info = label_info(recipe, task_data.label_names)
    output = trainer.predict(tokenized.test, metric_key_prefix=PREFIX)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    texts = list(zip(*(task_data.test[c] for c in info.text_columns)))
    return score(texts, np.asarray(task_data.test["labels"]), logits, info, recipe.metrics, task_data.pos_label)


# ---------------------------------------------------------------------------------------------------------------
# Validation rows and early stopping

def saved_validation_rows(checkpoint: str | None) -> list[int] | None:
    """The train rows a run carved out for validation, as it saved them beside `checkpoint` (the checkpoint a run
    resumes from); None for a fresh run or a run that saved none."""
    if checkpoint is None:
        return None
    path = Path(checkpoint).parent / VALIDATION_ROWS_FILE
    if not path.is_file():
        return None
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{str(path)!r} is damaged; start the run afresh with another --output_dir") from None
    return [int(i) for i in rows]


def save_validation_rows(task_data, args) -> None:
    """Save the train rows carved out for validation (if any) in the run's folder, beside its checkpoints."""
    if task_data.validation_rows is not None and args.process_index == 0:
        write_json_atomic(Path(args.output_dir) / VALIDATION_ROWS_FILE, {"seed": args.seed,
                                                                         "rows": task_data.validation_rows})


def early_stopping(recipe, args) -> list:
    """transformers' EarlyStoppingCallback when the recipe asks for it (else nothing), checked against the
    TrainingArguments `args` so that a bad combination fails before any data are read."""
    if recipe.early_stopping_patience is None:
        return []
    if not args.load_best_model_at_end:
        raise UsageError("early_stopping_patience needs load_best_model_at_end: true (the run keeps the best "
                         "checkpoint, not the last); set it, or leave early_stopping_patience unset")
    if args.eval_strategy == "no":
        raise UsageError("early_stopping_patience needs evaluations during training; set eval_strategy to steps "
                         "or epoch")
    from transformers import EarlyStoppingCallback

    return [EarlyStoppingCallback(recipe.early_stopping_patience, recipe.early_stopping_threshold)]


def stopping_summary(state, args) -> dict:
    """Where training stopped and which checkpoint it kept, for metrics.json (empty when it kept the last)."""
    if not args.load_best_model_at_end:
        return {}
    return {"stopped_at_step": state.global_step, "max_steps": state.max_steps,
            "stopped_early": state.global_step < state.max_steps,
            "best_model_checkpoint": Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None,
            "best_metric": state.best_metric}


# ---------------------------------------------------------------------------------------------------------------
# Eval-only: an adapter trained before, scored on a labelled split or file (score.py)

def score_adapter(adapter: str, output_dir: Path, *, data: dict, metrics: list[str] | None = None,
                  base_model: str | None = None, precision: str = "fp32", batch_size: int = 64,
                  overwrite: bool = False) -> dict:
    """Score `adapter` (an output folder of train.py, a Hub id or a merged export) on labelled rows and write
    metrics.json and the files of the test step into `output_dir`, never into the adapter's folder. `data` holds
    recipe keys naming the rows: test_file or dataset_name (+ dataset_config_name) and test_split,
    label_column_name, text_column_names (default: the adapter's), max_test_samples. The data and the output
    folder are checked before the model loads. Returns the metrics written."""
    import yaml

    from . import data as data_lib
    from .fileio import staged_folder
    from .inference import Classifier, read_folder, resolve_adapter
    from .labels import pos_label_id
    from .recipe import DEFAULT_METRICS, TASK_METRICS, Recipe
    from .runfolder import METRICS_FILE, RECIPE_FILE, read_json
    from .textio import Row

    folder = read_folder(resolve_adapter(adapter), base_model)
    out = output_dir.expanduser().resolve()
    if out == folder.path.resolve() or folder.path.resolve() in out.parents:
        raise UsageError(f"output_dir {str(output_dir)!r} is inside the adapter's folder {str(folder.path)!r}; "
                         "pass a folder of its own")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise UsageError(f"output_dir {str(output_dir)!r} {'is a file' if not out.is_dir() else 'is not empty'}; "
                         "pass a new folder" + (", or --overwrite" if out.is_dir() else ""))
    saved = yaml.safe_load((folder.path / RECIPE_FILE).read_text(encoding="utf-8")) \
        if (folder.path / RECIPE_FILE).is_file() else {}
    kind = folder.problem_type or SINGLE_LABEL
    metrics = list(metrics or saved.get("metrics") or DEFAULT_METRICS[kind])
    unknown = [m for m in metrics if m not in TASK_METRICS[kind]]
    if unknown:
        raise UsageError(f"metric {unknown[0]!r} is not one of a {kind} model's: {', '.join(TASK_METRICS[kind])}")
    names = folder.label_names or [v for _, v in sorted(
        (int(k), v) for k, v in read_json(folder.path / "config.json", "model config")["id2label"].items())]
    columns = data.get("text_column_names") or folder.text_columns
    if len(columns) != len(folder.text_columns):
        raise UsageError(f"text_column_names names {len(columns)} column(s) but the adapter reads "
                         f"{len(folder.text_columns)}; name {len(folder.text_columns)}")
    recipe = Recipe(**{**data, "text_column_names": list(columns), "problem_type": kind,
                       "pos_label": saved.get("pos_label")})
    rows = data_lib.load_test_data(recipe, names, given=saved.get("label_names") is not None)
    info = LabelInfo(label_names=names, text_columns=list(columns), max_seq_length=folder.max_seq_length,
                     problem_type=kind, threshold=folder.threshold)
    classifier = Classifier.from_folder(folder, precision=precision, batch_size=batch_size)
    texts = list(zip(*(rows[c] for c in columns)))
    logits = classifier.logits([Row(*t) for t in texts]).numpy()
    scored = score(texts, np.asarray(rows["labels"]), logits, info, metrics, pos_label_id(recipe, names))
    where = data.get("test_file") or f"{data.get('dataset_name')}" \
        f"{'/' + data['dataset_config_name'] if data.get('dataset_config_name') else ''}:{data.get('test_split')}"
    result = {"adapter": str(adapter), "data": where, "truncated_rows": classifier.truncated, **scored.metrics}
    with staged_folder(out, last=METRICS_FILE) as stage:
        write_files(stage, scored)
        write_json_atomic(stage / METRICS_FILE, result)
    return result
