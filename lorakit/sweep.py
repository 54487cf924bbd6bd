"""Sweeps: train the product of `--sweep KEY=V1,V2,...` grids with one command, then tabulate and plot them.

    python train.py --task sst2 --sweep lora_r=1,2,4,8 --sweep learning_rate=1e-3,2e-3 --output_dir runs/rank
    python train.py --task sst2 --sweep lora_target_modules=query,value,query+value --output_dir runs/targets
    python train.py --task rte --sweep method:learning_rate=lora:1e-3,full:3e-5 --output_dir runs/rte

Values are separated by commas; a list value joins its items with `+` (`query+value`, `lora_layers=0-2+5`).
`KEY1:KEY2=A1:B1,A2:B2` sweeps keys together (zipped, not crossed), so that a baseline such as full fine-tuning
gets its own learning rate. Every other flag applies to every run.

Each setting trains in its own folder under output_dir, named for the setting (`lora_r=8,learning_rate=1e-3`).
Before any weights load, every setting's trainable-parameter count is computed on a weightless copy of the
model; settings over max_trainable_params are listed and skipped. Re-running the same command reuses finished
runs (their folder has metrics.json, written last) and resumes interrupted ones from their last complete
checkpoint. sweep.json records what each folder was trained with, so a changed flag is an error instead of a
silent mix of old and new runs (--overwrite_output_dir retrains those settings).

Runs train in this process, one after another: constructing TrainingArguments resets accelerate's global state
and each run re-seeds, which is also how transformers' own hyperparameter_search runs its trials, and it saves
re-importing torch for every run.

Written to output_dir: results.csv, results.md, eval_curves.png, best_metric.png, metric_vs_params.png.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gc
import hashlib
import io
import itertools
import json
import logging
import re
import shutil
import sys
import types
import typing
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

import yaml

from . import data as data_lib
from . import modeling, plots, training
from .errors import UsageError
from .fileio import holds_run, write_json_atomic
from .modeling import ParamReport
from .runfolder import LOG_FILE, METRICS_FILE, RECIPE_FILE
from .recipe import RECIPE_KEYS, Recipe, Resolved, closest, coerce, training_argument_fields, training_type, \
    validate

log = logging.getLogger("lorakit")

SWEEP_FILE = "sweep.json"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
CURVES_PNG = "eval_curves.png"
BEST_PNG = "best_metric.png"
PARAMS_PNG = "metric_vs_params.png"
# The sweep decides these for every run itself: the folder, resuming, replacing; pushing many runs to one Hub id
# would overwrite each other.
NOT_SWEEPABLE = ("output_dir", "resume_from_checkpoint", "overwrite_output_dir", "dry_run", "push_to_hub")
# Keys that may differ between two invocations without making a finished run stale.
_NOT_COMPARED = {"output_dir", "resume_from_checkpoint", "overwrite_output_dir", "dry_run", "max_trainable_params"}


@dataclass(frozen=True)
class Axis:
    """One `--sweep`: the key (or keys swept together) and its values as typed, one text per key."""

    keys: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]

    @property
    def title(self) -> str:
        return ":".join(self.keys)

    def label(self, value: tuple[str, ...]) -> str:
        return ":".join(value)


@dataclass
class Setting:
    """One point of the grid: its folder name, its value on each axis, the recipe it trains, and what happened."""

    name: str
    choice: tuple[tuple[str, ...], ...]
    resolved: Resolved
    params: ParamReport | None = None
    # planned -> over budget, or train / retrain / resume / reuse -> trained / resumed / reused
    status: str = "planned"

    @property
    def folder(self) -> Path:
        return Path(self.resolved.training["output_dir"])


# ---------------------------------------------------------------------------------------------------------------
# Parsing


@functools.lru_cache(maxsize=None)
def _key_types() -> dict:
    key_types = dict(typing.get_type_hints(Recipe))
    key_types.update({name: training_type(f) for name, f in training_argument_fields().items()})
    return key_types


def _type_words(tp) -> str:
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    members = [t for t in typing.get_args(tp) if t is not type(None)] if union else [tp]
    return " or ".join(getattr(m, "__name__", str(m)) if not typing.get_args(m) else str(m) for m in members)


def parse_axes(specs: list[str]) -> list[Axis]:
    """Each `KEY=V1,V2,...` (or `K1:K2=A1:B1,A2:B2`) as an Axis, every value type-checked; else UsageError."""
    key_types = _key_types()
    axes: list[Axis] = []
    swept: set[str] = set()
    for spec in specs:
        head, eq, tail = spec.partition("=")
        if not eq or not head.strip():
            raise UsageError(f"--sweep {spec!r} should be KEY=V1,V2,... (e.g. lora_r=4,8,16)")
        keys = tuple(k.strip().replace("-", "_") for k in head.split(":"))
        for key in keys:
            if key in NOT_SWEEPABLE:
                raise UsageError(f"--sweep {spec!r}: {key} is set by the sweep for each run and cannot be swept; "
                                 f"sweep another key")
            if key not in key_types:
                raise UsageError(f"--sweep {spec!r}: unknown key {key!r}{closest(key, set(key_types))}; "
                                 "sweep a recipe key, e.g. lora_r=4,8")
            if key in swept:
                raise UsageError(f"{key} is swept twice; give all its values in one --sweep {key}=V1,V2,...")
            swept.add(key)
        texts = [t.strip() for t in tail.split(",")]
        if any(not t for t in texts):
            raise UsageError(f"--sweep {spec!r} has an empty value; list the values separated by commas, "
                             f"e.g. {head}=V1,V2")
        values = []
        for text in texts:
            parts = tuple(p.strip() for p in text.split(":")) if len(keys) > 1 else (text,)
            if len(parts) != len(keys) or not all(parts):
                raise UsageError(f"--sweep {spec!r}: value {text!r} should give {len(keys)} values joined by ':', "
                                 f"one for each of {', '.join(keys)}")
            for key, part in zip(keys, parts):
                try:
                    coerce(key, part, key_types[key])
                except UsageError:
                    raise UsageError(f"--sweep {spec!r}: {key} cannot take the value {part!r} (it should be "
                                     f"{_type_words(key_types[key])}); fix that value") from None
            if parts in values:
                raise UsageError(f"--sweep {spec!r} lists {text!r} twice; give each value once")
            values.append(parts)
        axes.append(Axis(keys=keys, values=tuple(values)))
    return axes


def folder_name(assignments: list[tuple[str, str]]) -> str:
    """`key=value,key=value` as typed, made filesystem-safe; altered or long names get a hash so none collide."""
    raw = ",".join(f"{k}={v}" for k, v in assignments)
    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", raw)
    if safe != raw or len(safe) > 120:
        safe = f"{safe[:110]}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}"
    return safe


def sweep_root(resolved: Resolved) -> Path:
    return Path(resolved.training.get("output_dir") or Path("outputs") / f"{resolved.recipe.task_name or 'run'}-sweep")


def _with_assignments(resolved: Resolved, assignments: list[tuple[str, str]], folder: Path) -> Resolved:
    """The base recipe with the setting's keys set as command-line overrides would be: same coercion, validation."""
    key_types = _key_types()
    converted = {key: coerce(key, text, key_types[key]) for key, text in assignments}
    recipe = dataclasses.replace(resolved.recipe, **{k: v for k, v in converted.items() if k in RECIPE_KEYS})
    validate(recipe)
    train_args = {**resolved.training, **{k: v for k, v in converted.items() if k not in RECIPE_KEYS}}
    train_args["output_dir"] = str(folder)
    return Resolved(recipe=recipe, training=train_args, source=resolved.source,
                    overrides={**resolved.overrides, **converted})


def _label_names(recipe: Recipe, cache: dict) -> list[str]:
    if recipe.label_names:
        return list(recipe.label_names)
    key = tuple(getattr(recipe, k) for k in ("dataset_name", "dataset_config_name", "train_file", "validation_file",
                                              "train_split", "label_column_name", "max_train_samples"))
    if key not in cache:
        cache[key] = data_lib.load_task_data(recipe).label_names
    return cache[key]


def count_params(recipe: Recipe, label_cache: dict | None = None) -> ParamReport:
    """Trainable and total parameters of the run `recipe` describes, from the config on the meta device
    (no weights read); checks the LoRA targets, layer indices and sequence length on the way."""
    config = modeling.load_config(recipe, _label_names(recipe, {} if label_cache is None else label_cache))
    modeling.check_seq_length(recipe, config)
    return modeling.param_report(modeling.build_model(recipe, config, random_weights=True))


def plan(resolved: Resolved) -> list[Setting]:
    """Every setting of the grid with its recipe and parameter count, over-budget ones marked; nothing written.

    Any setting's invalid value (a bad LoRA target, a layer out of range ...) is a UsageError naming it.
    """
    axes = parse_axes(resolved.sweeps)
    root = sweep_root(resolved)
    settings = []
    label_cache: dict = {}
    for choice in itertools.product(*(axis.values for axis in axes)):
        assignments = [(k, v) for axis, value in zip(axes, choice) for k, v in zip(axis.keys, value)]
        name = folder_name(assignments)
        try:
            run_recipe = _with_assignments(resolved, assignments, root / name)
            params = count_params(run_recipe.recipe, label_cache)
        except UsageError as err:
            raise UsageError(f"sweep setting {name}: {err}") from None
        setting = Setting(name=name, choice=choice, resolved=run_recipe, params=params)
        budget = run_recipe.recipe.max_trainable_params
        if budget is not None and params.trainable > budget:
            setting.status = "over budget"
        settings.append(setting)
    return settings


# ---------------------------------------------------------------------------------------------------------------
# Running


def _comparable(resolved: Resolved) -> dict:
    """The recipe as JSON values, without the keys that may change between invocations."""
    data = json.loads(json.dumps(resolved.as_dict(), default=str))
    return {k: v for k, v in data.items() if k not in _NOT_COMPARED}


def _recorded(folder: Path, state: dict) -> dict | None:
    """What a folder was trained with: the sweep's record, else the run's own recipe.yaml, else None."""
    if folder.name in state.get("runs", {}):
        return state["runs"][folder.name]["recipe"]
    recipe_file = folder / RECIPE_FILE
    if recipe_file.is_file():
        data = json.loads(json.dumps(yaml.safe_load(recipe_file.read_text()), default=str))
        return {k: v for k, v in data.items() if k not in _NOT_COMPARED}
    return None


def _step(checkpoint: Path) -> int:
    suffix = checkpoint.name.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1


def _decide(setting: Setting, state: dict, overwrite: bool) -> None:
    """Reuse a finished run, resume an interrupted one, or train afresh; a folder trained with another recipe
    is an error unless --overwrite_output_dir (then it retrains, its stale checkpoints removed first)."""
    folder = setting.folder
    if not holds_run(folder):
        setting.status = "train"
        return
    wanted = _comparable(setting.resolved)
    recorded = _recorded(folder, state)
    if not _same_recipe(recorded, wanted):
        if not overwrite:
            diff = _first_difference(recorded, wanted)
            raise UsageError(f"{folder} holds a run {diff}; pass another --output_dir, rerun with the earlier "
                             "flags, or add --overwrite_output_dir to retrain it")
        setting.status = "retrain"
        return
    if (folder / METRICS_FILE).is_file():
        setting.status = "reuse"
        return
    setting.status = "resume" if training.last_complete_checkpoint(folder) else "train"


def _kit_default(key: str):
    """A kit key's default as JSON values (missing for TrainingArguments keys, which are recorded only if set)."""
    field = {f.name: f for f in dataclasses.fields(Recipe)}.get(key)
    if field is None:
        return _MISSING
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    return json.loads(json.dumps(default, default=str))


_MISSING = object()


def _same_recipe(recorded: dict | None, wanted: dict) -> bool:
    """Equal recipes, where a kit key missing from the record (added to the kit after that run) counts as its
    default: the run was trained with the behaviour the default stands for."""
    if recorded is None:
        return False
    return all(recorded.get(k, _kit_default(k)) == wanted.get(k, _kit_default(k)) for k in set(recorded) | set(wanted))


def _first_difference(recorded: dict | None, wanted: dict) -> str:
    if recorded is None:
        return "this sweep did not start"
    for key in sorted(set(recorded) | set(wanted)):
        if recorded.get(key) != wanted.get(key):
            return f"trained with {key}={recorded.get(key)!r}, but this sweep sets {key}={wanted.get(key)!r}"
    return "trained with another recipe"


def _run_one(setting: Setting, state: dict, root: Path, train: Callable[[Resolved], dict | None]) -> None:
    folder = setting.folder
    train_args = dict(setting.resolved.training)
    recipe = dataclasses.replace(setting.resolved.recipe, overwrite_output_dir=True)  # the folder is the sweep's own
    if setting.status == "retrain":
        for stale in folder.glob("checkpoint-*"):
            shutil.rmtree(stale)
    if setting.status == "resume":
        checkpoint = Path(training.last_complete_checkpoint(folder))
        for partial in folder.glob("checkpoint-*"):
            # A checkpoint cut off mid-write cannot be resumed from, and would be picked as the latest.
            if _step(partial) > _step(checkpoint):
                shutil.rmtree(partial)
        train_args["resume_from_checkpoint"] = str(checkpoint)
        log.info("sweep: resuming %s from %s", setting.name, checkpoint.name)
    state.setdefault("runs", {})[setting.name] = {"recipe": _comparable(setting.resolved),
                                                  "resumed": setting.status == "resume"}
    write_json_atomic(root / SWEEP_FILE, state)
    train(dataclasses.replace(setting.resolved, recipe=recipe, training=train_args))
    setting.status = "resumed" if setting.status == "resume" else "trained"
    gc.collect()  # the finished run's model and optimiser go before the next one is built


def run_sweep(resolved: Resolved, train: Callable[[Resolved], dict | None]) -> int:
    """Plan, check and train every setting of the sweep with `train` (train.py's), then write the table and plots;
    returns the exit code."""
    training.setup_logging(True)
    if resolved.training.get("push_to_hub"):
        raise UsageError("--push_to_hub would push every sweep run to one Hub repo; drop it, and train the "
                         "setting you keep without --sweep to push it")
    if resolved.training.get("resume_from_checkpoint"):
        raise UsageError("--sweep resumes interrupted runs itself; drop --resume_from_checkpoint and rerun the "
                         "same sweep command")
    root = sweep_root(resolved)
    if root.exists() and not root.is_dir():
        raise UsageError(f"output_dir {str(root)!r} is a file; pass a folder path with --output_dir")
    if holds_run(root) and not (root / SWEEP_FILE).is_file():
        raise UsageError(f"output_dir {str(root)!r} holds a single run, not a sweep; pass another --output_dir")
    settings = plan(resolved)
    over = [s for s in settings if s.status == "over budget"]
    if len(over) == len(settings):
        smallest = min(settings, key=lambda s: s.params.trainable)
        raise UsageError(f"every sweep setting trains more than max_trainable_params "
                         f"{resolved.recipe.max_trainable_params:,} (the smallest, {smallest.name}, trains "
                         f"{smallest.params.trainable:,}); raise the budget or sweep smaller settings")
    log.info("sweep: %d settings under %s", len(settings), root)
    if over:
        log.info("sweep: skipping %d over max_trainable_params %s: %s", len(over),
                 f"{resolved.recipe.max_trainable_params:,}",
                 "; ".join(f"{s.name} ({s.params.trainable:,})" for s in over))
    state = json.loads((root / SWEEP_FILE).read_text()) if (root / SWEEP_FILE).is_file() else {}
    for setting in settings:
        if setting.status != "over budget":
            _decide(setting, state, overwrite=resolved.recipe.overwrite_output_dir)
    for line in _plan_lines(settings):
        log.info(line)
    if resolved.recipe.dry_run:
        log.info("dry run: nothing trained or written")
        return 0
    root.mkdir(parents=True, exist_ok=True)
    state["sweeps"] = list(resolved.sweeps)
    write_json_atomic(root / SWEEP_FILE, state)
    todo = [s for s in settings if s.status in ("train", "retrain", "resume")]
    try:
        for i, setting in enumerate(todo, 1):
            log.info("sweep: run %d/%d: %s", i, len(todo), setting.name)
            _run_one(setting, state, root, train)
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume the sweep", file=sys.stderr)
        return 130
    for setting in settings:
        if setting.status == "reuse":
            setting.status = "reused"
    rows = write_results(settings, parse_axes(resolved.sweeps), root, resolved.recipe)
    print(markdown_table(rows, resolved.recipe))
    log.info("sweep: results in %s (%s, %s, %s, %s, %s)", root, RESULTS_CSV, RESULTS_MD, CURVES_PNG, BEST_PNG,
             PARAMS_PNG)
    return 0


def _plan_lines(settings: list[Setting]) -> list[str]:
    width = max(len(s.name) for s in settings)
    return [f"  {s.name:<{width}}  {s.params.trainable:>12,} trainable ({s.params.percent:.3f}%)  {s.status}"
            for s in settings]


# ---------------------------------------------------------------------------------------------------------------
# Results


def _resumed(root: Path, name: str) -> bool:
    state_file = root / SWEEP_FILE
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    return bool(state.get("runs", {}).get(name, {}).get("resumed"))


def result_rows(settings: list[Setting], axes: list[Axis], root: Path, recipe: Recipe) -> list[dict]:
    """One dict per setting: its swept values, status, parameter counts, best and final metrics, timings.

    A resumed run's timings cover all its segments (lorakit.trainer.TrainClock); one resumed from a checkpoint written
    before the kit kept that clock timed only the part after it, so its timings are left empty.
    """
    headline = recipe.headline_metric
    rows = []
    for setting in settings:
        row = {"setting": setting.name}
        for axis, value in zip(axes, setting.choice):
            row.update(dict(zip(axis.keys, value)))
        row.update({"status": setting.status, "trainable_params": setting.params.trainable,
                    "total_params": setting.params.total,
                    "trainable_percent": round(setting.params.percent, 4)})
        metrics_file = setting.folder / METRICS_FILE
        if metrics_file.is_file():
            metrics = json.loads(metrics_file.read_text())
            row["trainable_params"] = metrics["trainable_params"]
            row["total_params"] = metrics["total_params"]
            row["trainable_percent"] = metrics["trainable_percent"]
            row[f"best_eval_{headline}"] = metrics.get(f"best_eval_{headline}")
            for name in recipe.metrics:
                row[f"eval_{name}"] = metrics.get(f"eval_{name}")
            row["epochs"] = metrics.get("epoch")
            if metrics.get("train_segments") or not _resumed(root, setting.name):
                runtime = metrics.get("train_runtime")
                row["train_runtime_s"] = runtime
                row["s_per_epoch"] = runtime / metrics["epoch"] if runtime and metrics.get("epoch") else None
                row["train_samples_per_second"] = metrics.get("train_samples_per_second")
        rows.append(row)
    return rows


def write_results(settings: list[Setting], axes: list[Axis], root: Path, recipe: Recipe) -> list[dict]:
    """results.csv, results.md and the three plots in `root`; returns the table rows."""
    rows = result_rows(settings, axes, root, recipe)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_text(root / RESULTS_CSV, buffer.getvalue())
    _write_text(root / RESULTS_MD, markdown_table(rows, recipe) + "\n")
    _plot(settings, axes, rows, root, recipe)
    return rows


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _fmt(value, spec: str) -> str:
    return "" if value is None or value == "" else format(value, spec)


def markdown_table(rows: list[dict], recipe: Recipe) -> str:
    """The results as a Markdown table: setting, trainable params, % of total, best and final metrics, timings."""
    headline = recipe.headline_metric
    others = [m for m in recipe.metrics if m != headline]
    header = ["setting", "trainable params", "% of total", f"best {headline}", f"final {headline}",
              *[f"final {m}" for m in others], "train time (s)", "s/epoch", "samples/s", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 2) + ["---"]) + "|"]
    for row in rows:
        cells = [row["setting"], f"{row['trainable_params']:,}", f"{row['trainable_percent']:.3f}",
                 _fmt(row.get(f"best_eval_{headline}"), ".4f"), _fmt(row.get(f"eval_{headline}"), ".4f"),
                 *[_fmt(row.get(f"eval_{m}"), ".4f") for m in others], _fmt(row.get("train_runtime_s"), ".1f"),
                 _fmt(row.get("s_per_epoch"), ".1f"), _fmt(row.get("train_samples_per_second"), ".1f"),
                 row["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(settings: list[Setting], axes: list[Axis], rows: list[dict], root: Path, recipe: Recipe) -> None:
    headline = recipe.headline_metric
    best_key = f"best_eval_{headline}"
    task = recipe.task_name or "sweep"
    model = "/".join(Path(recipe.model_name_or_path).parts[-2:])  # a Hub id, or a local folder and its parent
    curves = []
    for setting in settings:
        history_file = setting.folder / LOG_FILE
        if not history_file.is_file():
            continue
        history = json.loads(history_file.read_text())
        # The final evaluation repeats the last step's; keep one point per step.
        points = sorted({e["step"]: e[f"eval_{headline}"] for e in history if f"eval_{headline}" in e}.items())
        # Lines are the first swept key's values; every combination of the other keys gets its own panel.
        panel = ", ".join(f"{axis.title}={axis.label(v)}" for axis, v in zip(axes[1:], setting.choice[1:]))
        curves.append(plots.Curve(label=axes[0].label(setting.choice[0]), points=points, panel=panel))
    if curves:
        plots.plot_curves(curves, headline, root / CURVES_PNG, legend_title=axes[0].title,
                          title=f"{task} on {model}: eval {headline} against step")
    done = [r for r in rows if r.get(best_key) is not None]
    if done:
        plots.plot_best_bars([r["setting"] for r in done], [r[best_key] for r in done],
                             [f"({r['trainable_percent']:.3f}% trained)" for r in done], headline,
                             root / BEST_PNG, title=f"{task} on {model}: best eval {headline}")
        short = {s.name: ", ".join(axis.label(v) for axis, v in zip(axes, s.choice)) for s in settings}
        plots.plot_metric_vs_params([short[r["setting"]] for r in done], [r["trainable_params"] for r in done],
                                    [r[best_key] for r in done], headline, root / PARAMS_PNG,
                                    title=f"{task} on {model}\nbest eval {headline} against trainable parameters "
                                          f"({', '.join(axis.title for axis in axes)})")
