"""Recipes: one flat YAML file per task, overridable key by key from the command line.

A recipe holds two kinds of keys: the kit's own (`Recipe` below: data, model, LoRA) and every field of
`transformers.TrainingArguments`, passed through unchanged. `--task NAME` picks `configs/NAME.yaml`,
`--config PATH` takes a user's file, and `--key value` overrides any key. Values from the YAML file and
from the command line go through the same type conversion, so both fail the same way on a bad value.

Why not TrlParser or HfArgumentParser (alignment-handbook's two lines): both build their parser from the
TrainingArguments dataclass, and importing it loads torch (5-8 s on a 2-core CPU), so `--help` and every recipe
error would come after that wait; `validate` below imports neither torch nor peft, and the known TrainingArguments
keys come from a committed list (lorakit/trainingargs.py, checked against the pinned transformers by a test). They
also take lists as space-separated values, where recipes and sweeps write `query,value` / `query+value`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import UsageError
from .runfolder import MULTI_LABEL, PROBLEM_TYPES, REGRESSION, SINGLE_LABEL

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def _key(default=None, help: str = "", default_factory=None):
    if default_factory is not None:
        return field(default_factory=default_factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


# The metrics each problem type can report (lorakit/metrics.py computes them), and its default ones.
TASK_METRICS = {SINGLE_LABEL: ("accuracy", "f1", "f1_macro", "f1_micro", "matthews_correlation"),
                MULTI_LABEL: ("f1_micro", "f1_macro", "exact_match"),
                REGRESSION: ("pearson", "spearmanr")}
DEFAULT_METRICS = {SINGLE_LABEL: ["accuracy"], MULTI_LABEL: ["f1_micro", "f1_macro", "exact_match"],
                   REGRESSION: ["pearson", "spearmanr"]}


@dataclass
class Recipe:
    """The kit's own recipe keys; names follow run_glue (data) and PEFT (LoRA)."""

    task_name: str | None = _key(help="Name of the task, used in logs, the model card and the default output folder.")
    # Model
    model_name_or_path: str = _key("FacebookAI/roberta-base", help="Hub id or local folder of the backbone.")
    trust_remote_code: bool = _key(False, help="Allow code from the model repo to run (off unless you set it).")
    attn_implementation: str | None = _key(help="eager, sdpa, ...; default: the library's choice for the model.")
    # Data
    dataset_name: str | None = _key(help="Hub dataset id or a local folder laid out like one.")
    dataset_config_name: str | None = _key(help="Dataset configuration, e.g. sst2 for nyu-mll/glue.")
    train_file: str | None = _key(help="Your own training data: .csv, .json/.jsonl or .parquet.")
    validation_file: str | None = _key(help="Your own evaluation data, same format as train_file.")
    train_split: str = _key("train", help="Split to train on.")
    eval_split: str = _key("validation", help="Split to evaluate on and select checkpoints with.")
    validation_split_percentage: float | None = _key(
        help="Carve the evaluation rows from train instead: this percentage of it, in (0, 50], seeded by `seed` "
             "and stratified by label for single-label tasks; the chosen rows are saved in the run folder.")
    test_split: str | None = _key(help="Split scored once after training (test_<metric> in metrics.json, "
                                       "predictions, per-class report, plot); never used to select checkpoints.")
    test_file: str | None = _key(help="Your own test data, scored once after training like test_split.")
    text_column_names: list[str] = _key(help="One text column, or two for sentence pairs (comma-separated).",
                                        default_factory=lambda: ["sentence"])
    label_column_name: str = _key("label", help="Column holding the label (class index or label name).")
    label_names: list[str] | None = _key(help="Class names in id order; default: from the dataset (a ClassLabel "
                                              "feature, else the distinct label values, numbers sorted as numbers).")
    problem_type: str = _key(SINGLE_LABEL, help="single_label_classification (one class per row), "
                                                "multi_label_classification (a list of labels per row, or a "
                                                "comma-separated string in a CSV) or regression (one number per row).")
    metrics: list[str] | None = _key(help="Metrics to report; the first is the headline. Single-label: accuracy, f1 "
                                          "(binary, of pos_label), f1_macro, f1_micro, matthews_correlation; "
                                          "multi-label: f1_micro, f1_macro, exact_match; regression: pearson, "
                                          "spearmanr. Default: the first of the problem type's list (regression: "
                                          "pearson, spearmanr).")
    pos_label: str | None = _key(help="The positive class that metric f1 scores; default: the second label.")
    threshold: float | None = _key(help="Multi-label: a label is predicted when its probability (sigmoid) exceeds "
                                        "this; default 0.5.")
    class_weights: list[str] | None = _key(
        help="Loss weights for imbalanced data: balanced (inverse class frequency on the train split; for "
             "multi-label each label's negatives / positives as BCE's pos_weight), or one number per label. The "
             "resolved numbers are saved in recipe.yaml.")
    max_seq_length: int = _key(512, help="Longer inputs are truncated to this many tokens.")
    max_train_samples: int | None = _key(help="Train on the first N rows only.")
    max_eval_samples: int | None = _key(help="Evaluate on the first N rows only.")
    max_test_samples: int | None = _key(help="Score the first N test rows only.")
    # Method
    method: str = _key("lora", help="lora, or full for the full fine-tuning baseline with the same recipe.")
    lora_impl: str = _key("peft", help="peft (PEFT's layer) or scratch (lorakit/adapters/, same file format).")
    lora_r: int = _key(8, help="LoRA rank.")
    lora_alpha: float = _key(16, help="LoRA scaling numerator: the update is scaled by lora_alpha / lora_r.")
    lora_dropout: float = _key(0.1, help="Dropout on the LoRA path only.")
    lora_target_modules: list[str] | None = _key(help="Linear layers to adapt; default per architecture.")
    lora_layers: list[int] | None = _key(help="Indices of the layers to adapt, e.g. 0-5 or 0,2,4; default all.")
    lora_modules_to_save: list[str] | None = _key(
        help="Modules trained in full and saved with the adapter besides the classifier, e.g. pooler; "
             "default per architecture; an empty value trains the classifier alone.")
    head_learning_rate: float | None = _key(
        help="Learning rate of the head (the classifier and lora_modules_to_save, e.g. BERT's pooler); default: "
             "learning_rate. LoRA's matrices start at zero and want a high rate; a pretrained pooler may not.")
    loraplus_lr_ratio: float | None = _key(
        help="LoRA+ (Hayou et al. 2024): LoRA's B matrices learn at learning_rate times this ratio, A (and the "
             "rest) at learning_rate; the paper suggests 16 with a learning_rate below plain LoRA's. Default: off.")
    use_dora: bool = _key(False, help="DoRA (Liu et al. 2024): each adapted weight is split into a magnitude "
                                       "(one trainable number per output) and a direction that LoRA updates.")
    use_rslora: bool = _key(False, help="rsLoRA (Kalajdzievski 2023): the update is scaled by lora_alpha / sqrt(lora_r) "
                                         "instead of lora_alpha / lora_r, which keeps high ranks learning.")
    init_lora_weights: bool | str = _key(
        True, help="PEFT's LoRA initialisation (lora_impl peft): true (B zero), false, gaussian, orthogonal, or "
                   "pissa, pissa_niter_N, olora (LoRA starts from the base weights' principal directions, which it "
                   "takes out of the base; the saved adapter is converted to plain LoRA on the unchanged base).")
    max_trainable_params: int | None = _key(help="Stop before training if the run would train more than this.")
    init_adapter: str | None = _key(
        help="Warm start: the LoRA matrices of this trained adapter (folder or Hub id; same base model, targets "
             "and rank) instead of fresh ones; its classifier too when the label count matches, else a new one.")
    init_adapter_modules_to_save: bool = _key(
        False, help="With init_adapter, also take the body's modules_to_save (e.g. BERT's pooler) from it.")
    fast_dropout: bool = _key(True, help="On CPU, dropout masks drawn four elements per 64-bit random word, the "
                                          "attention probabilities' included (lorakit/cpu/dropout.py, attention.py; "
                                          "faster than torch's there); false: torch's nn.Dropout and SDPA's dropout.")
    load_in_4bit: bool = _key(False, help="Quantise the backbone to NF4 with bitsandbytes (QLoRA).")
    load_in_8bit: bool = _key(False, help="Quantise the backbone to int8 with bitsandbytes.")
    # Run
    early_stopping_patience: int | None = _key(
        help="Stop after this many evaluations without improving metric_for_best_model (needs "
             "load_best_model_at_end); metrics.json says where it stopped and which checkpoint it kept.")
    early_stopping_threshold: float = _key(0.0, help="Smallest change of the metric that counts as improving.")
    dry_run: bool = _key(False, help="Resolve everything, build the model, print the report, write nothing.")
    overwrite_output_dir: bool = _key(False, help="Allow writing into an output folder that holds another run.")
    hub_private: bool = _key(False, help="Create the Hub repo as private when pushing.")
    license: str | None = _key(help="License of the trained model for its card, e.g. apache-2.0; default: the base "
                                    "model's, where its config or README names one.")

    def __post_init__(self):
        if self.metrics is None:
            self.metrics = list(DEFAULT_METRICS.get(self.problem_type, ["accuracy"]))

    @property
    def text_columns(self) -> tuple[str, ...]:
        return tuple(self.text_column_names)

    @property
    def headline_metric(self) -> str:
        return self.metrics[0]


RECIPE_KEYS = {f.name for f in dataclasses.fields(Recipe)}
# Where `train.py --help` lists each kit key (TrainingArguments keys: lorakit.trainingargs.SHOWN).
GROUPS = {
    "data": ("task_name", "dataset_name", "dataset_config_name", "train_file", "validation_file", "train_split",
             "eval_split", "validation_split_percentage", "test_split", "test_file", "text_column_names",
             "label_column_name", "label_names", "problem_type", "metrics", "pos_label", "threshold",
             "class_weights", "max_seq_length", "max_train_samples", "max_eval_samples", "max_test_samples"),
    "model": ("model_name_or_path", "trust_remote_code", "attn_implementation", "load_in_4bit", "load_in_8bit"),
    "LoRA": ("method", "lora_impl", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_layers",
             "lora_modules_to_save", "head_learning_rate", "loraplus_lr_ratio", "use_dora", "use_rslora",
             "init_lora_weights", "max_trainable_params", "init_adapter", "init_adapter_modules_to_save"),
    "training": ("fast_dropout", "early_stopping_patience", "early_stopping_threshold", "dry_run",
                 "overwrite_output_dir"),
    "Hub": ("hub_private", "license"),
}
# TrainingArguments fields the kit owns or sets itself; the rest pass through unchanged.
_NOT_PASSED_THROUGH = {"debug", "local_rank", "hub_token", "do_train", "do_eval", "do_predict"}


def training_keys() -> set[str]:
    """The TrainingArguments keys a recipe may set, without importing TrainingArguments (lorakit.trainingargs)."""
    from .trainingargs import FIELDS

    return set(FIELDS) - _NOT_PASSED_THROUGH - RECIPE_KEYS


def training_argument_fields() -> dict[str, dataclasses.Field]:
    """The dataclass fields of those keys, for their types; imports TrainingArguments (and torch)."""
    from transformers import TrainingArguments

    keys = training_keys()
    return {f.name: f for f in dataclasses.fields(TrainingArguments) if f.name in keys}


# ---------------------------------------------------------------------------------------------------------------
# Type conversion shared by YAML values and command-line strings.

def _parse_layers(text: str) -> list[int]:
    """'0-5' -> [0..5]; '0,2,4' -> [0, 2, 4]; '6-11+0' also works (sweeps join list items with +)."""
    out: list[int] = []
    for part in re.split(r"[,+]", text):
        part = part.strip()
        if re.fullmatch(r"\d+-\d+", part):
            lo, hi = map(int, part.split("-"))
            out.extend(range(lo, hi + 1))
        elif re.fullmatch(r"\d+", part):
            out.append(int(part))
        else:
            raise ValueError(part)
    return out


def _parse_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes", "on"}:
        return True
    if text in {"false", "0", "no", "off"}:
        return False
    raise ValueError(value)


def _is_list(tp) -> bool:
    return typing.get_origin(tp) is list


def _scalar_types(tp) -> list:
    """The non-None members of a (possibly Optional/Union) annotation."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [t for t in typing.get_args(tp) if t is not type(None)]
    return [tp]


def _allows_none(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _to_number(kind: type, value):
    if kind is bool:
        return _parse_bool(value)
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        number = float(value) if isinstance(value, str) else value
        if not float(number).is_integer():  # 2.5 is not a rank; never truncate silently
            raise ValueError(value)
        return int(number)
    return float(value)


def coerce(key: str, value, tp):
    """Convert a YAML value or a command-line string to the key's declared type, or raise UsageError."""
    if value is None or (isinstance(value, str) and value.lower() in {"none", "null"} and _allows_none(tp)):
        if _allows_none(tp) or tp is type(None):
            return None
    members = _scalar_types(tp)
    try:
        for member in members:
            if _is_list(member):
                item_type = typing.get_args(member)[0] if typing.get_args(member) else str
                if item_type is int:
                    return _parse_layers(value) if isinstance(value, str) else [int(v) for v in value]
                if isinstance(value, str):
                    return [v.strip() for v in re.split(r"[,+]", value) if v.strip()]
                if isinstance(value, (list, tuple)):
                    return [str(v) for v in value]
        kinds = [m for m in members if m in (bool, int, float)]
        if kinds:
            try:
                return _to_number(kinds[0], value)
            except (ValueError, TypeError):
                if str not in members:
                    raise
                return str(value)  # a `bool | str` field given a word, e.g. include_num_input_tokens_seen: all
        if any(m is dict or typing.get_origin(m) is dict for m in members) and isinstance(value, str) \
                and value.strip().startswith("{"):
            return json.loads(value)
        if isinstance(value, (dict, list)) and not any(m is str for m in members):
            return value
        return value if isinstance(value, (dict, list)) else str(value)
    except (ValueError, TypeError, json.JSONDecodeError):
        expected = " or ".join(getattr(m, "__name__", str(m)) for m in members)
        raise UsageError(f"{key} should be {expected} but the value passed is {value!r}; "
                         f"fix it in the recipe or pass --{key} with a valid value") from None


# ---------------------------------------------------------------------------------------------------------------
# Command line and YAML

def _split_cli(argv: list[str]) -> dict[str, str | bool]:
    """`--key value`, `--key=value` and bare `--flag` (true) into a dict; anything else is an error."""
    out: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            raise UsageError(f"unexpected argument {token!r}; recipe keys are given as --key value")
        key, eq, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if eq:
            out[key] = value
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out[key] = argv[i + 1]
            i += 2
        else:
            out[key] = True
            i += 1
    return out


def closest(key: str, known: set[str]) -> str:
    import difflib

    match = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def load_yaml(path: Path) -> dict:
    """Read a recipe file into a dict; a missing file or malformed YAML is a UsageError."""
    if not path.is_file():
        raise UsageError(f"recipe file {str(path)!r} not found; pass --task with one of "
                         f"{', '.join(shipped_tasks())} or --config with an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"recipe file {str(path)!r} is not valid YAML{where}; fix the file") from None
    if not isinstance(data, dict):
        raise UsageError(f"recipe file {str(path)!r} should hold key: value pairs, not {type(data).__name__}")
    return data


def shipped_tasks() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


@dataclass
class Resolved:
    """A recipe resolved from file and command line: the kit's keys, TrainingArguments keys, provenance."""

    recipe: Recipe
    training: dict  # TrainingArguments kwargs as given (hardware defaults are applied later)
    source: str  # the recipe file used
    overrides: dict  # keys set on the command line (after conversion)
    sweeps: list[str] = field(default_factory=list)  # raw --sweep KEY=V1,V2 strings

    def as_dict(self) -> dict:
        """Everything that defines the run, as plain YAML-able values (saved beside the adapter)."""
        data = dataclasses.asdict(self.recipe)
        data.update(self.training)
        return {k: v for k, v in data.items() if k not in SECRET_KEYS}


SECRET_KEYS = {"hub_token"}


def parse_recipe(argv: list[str]) -> Resolved:
    """Resolve `--task/--config` plus `--key value` overrides into a typed recipe, or raise UsageError."""
    cli = _split_cli(argv)
    task, config = cli.pop("task", None), cli.pop("config", None)
    sweeps_raw = []
    # --sweep may repeat; _split_cli keeps only the last, so collect them from argv directly.
    for i, token in enumerate(argv):
        if token == "--sweep" and i + 1 < len(argv):
            sweeps_raw.append(argv[i + 1])
        elif token.startswith("--sweep="):
            sweeps_raw.append(token.split("=", 1)[1])
    if cli.pop("sweep", None) is True:
        raise UsageError("--sweep needs a value, e.g. --sweep lora_r=4,8,16")
    if task is not None and config is not None:
        raise UsageError("pass either --task or --config, not both")
    if task is None and config is None:
        raise UsageError(f"no recipe given; pass --task with one of {', '.join(shipped_tasks())} "
                         "or --config PATH to your own YAML recipe")
    if task is not None:
        if task is True or not (CONFIG_DIR / f"{task}.yaml").is_file():
            raise UsageError(f"unknown task {task!r}; choose one of {', '.join(shipped_tasks())} "
                             "or pass --config PATH to your own recipe")
        path = CONFIG_DIR / f"{task}.yaml"
    else:
        path = Path(str(config))
    data = load_yaml(path)

    recipe_types = typing.get_type_hints(Recipe)
    known = RECIPE_KEYS | training_keys()
    for origin, values in (("recipe " + str(path), data), ("command line", cli)):
        unknown = [k for k in values if k not in known]
        if unknown:
            key = unknown[0]
            flag = f"--{key}" if origin == "command line" else key
            raise UsageError(f"unknown key {flag!r} in the {origin}{closest(key, known)}; "
                             "see python train.py --help for the recipe keys")

    # The kit's keys are converted and checked first: TrainingArguments' types need transformers (and torch),
    # so a bad kit value fails before that import.
    kit_file = {k: coerce(k, v, recipe_types[k]) for k, v in data.items() if k in RECIPE_KEYS}
    kit_cli = {k: coerce(k, v, recipe_types[k]) for k, v in cli.items() if k in RECIPE_KEYS}
    kit = {**kit_file, **kit_cli}
    if "task_name" not in kit and task is not None:
        kit["task_name"] = task
    recipe = Recipe(**kit)
    validate(recipe)
    ta_fields = training_argument_fields() if (set(data) | set(cli)) - RECIPE_KEYS else {}
    training_file = {k: coerce(k, v, training_type(ta_fields[k])) for k, v in data.items() if k not in RECIPE_KEYS}
    training_cli = {k: coerce(k, v, training_type(ta_fields[k])) for k, v in cli.items() if k not in RECIPE_KEYS}
    overrides = {k: {**kit_cli, **training_cli}[k] for k in cli}  # in command-line order
    return Resolved(recipe=recipe, training={**training_file, **training_cli}, source=str(path),
                    overrides=overrides, sweeps=sweeps_raw)


def training_type(f: dataclasses.Field):
    tp = f.type
    if isinstance(tp, str):
        from transformers import TrainingArguments

        tp = typing.get_type_hints(TrainingArguments)[f.name]
    return tp


# The values peft 0.21's LoraConfig accepts for init_lora_weights besides true/false (its Literal; a test checks
# this copy against it, so recipe validation needs no PEFT import). pissa_niter_N takes any N >= 0.
PEFT_INIT_LORA_WEIGHTS = ("gaussian", "eva", "olora", "pissa", "pissa_niter_[number of iters]", "corda", "loftq",
                          "orthogonal", "mica")
# Those the kit refuses: a data pass (eva, corda) or a LoftQ config it does not run; B frozen (mica).
_INIT_REFUSED = ("eva", "corda", "loftq", "mica")
_INIT_SUPPORTED = ("gaussian", "orthogonal", "pissa", "olora")


def rewrites_base(value) -> bool:
    """Whether an init_lora_weights value takes LoRA's start out of the base weights (PiSSA, OLoRA)."""
    return isinstance(value, str) and (value == "olora" or re.fullmatch(r"pissa(_niter_\d+)?", value) is not None)


def _init_problem(value) -> str | None:
    """What is wrong with an init_lora_weights value, or None."""
    supported = f"true, false, {', '.join(_INIT_SUPPORTED)} or pissa_niter_N"
    if isinstance(value, bool) or value in _INIT_SUPPORTED or rewrites_base(value):
        return None
    if value in _INIT_REFUSED:
        return (f"init_lora_weights {value!r} is PEFT's but not supported by the kit (it needs an initialisation "
                f"pass or freezes B); use {supported}, or leave it unset")
    return (f"init_lora_weights {value!r} is not one of PEFT's values (true, false, "
            f"{', '.join(PEFT_INIT_LORA_WEIGHTS)}); the kit supports {supported}")


def validate(recipe: Recipe) -> None:
    """Check the kit's keys before anything expensive; every problem found is named in one error."""
    problems = []
    if recipe.method not in ("lora", "full"):
        problems.append(f"method should be lora or full but the value passed is {recipe.method!r}")
    if recipe.lora_impl not in ("peft", "scratch"):
        problems.append(f"lora_impl should be peft or scratch but the value passed is {recipe.lora_impl!r}")
    if not 1 <= len(recipe.text_column_names) <= 2:
        problems.append(f"text_column_names should name 1 or 2 columns but names {recipe.text_column_names}")
    problems += _label_problems(recipe)
    if recipe.max_seq_length <= 0:
        problems.append(f"max_seq_length should be a positive integer but the value passed is {recipe.max_seq_length}")
    for key in ("max_train_samples", "max_eval_samples", "max_test_samples", "max_trainable_params",
                "early_stopping_patience"):
        value = getattr(recipe, key)
        if value is not None and value <= 0:
            problems.append(f"{key} should be a positive integer but the value passed is {value}")
    pct = recipe.validation_split_percentage
    if pct is not None and not 0 < pct <= 50:
        problems.append(f"validation_split_percentage should be in (0, 50] but the value passed is {pct}; "
                        "5 keeps 5% of train for validation")
    if pct is not None and recipe.validation_file:
        problems.append("validation_split_percentage carves validation rows from train but validation_file is "
                        "set too; drop one of them")
    if recipe.test_split and recipe.test_file:
        problems.append("test_split and test_file are exclusive; pick one")
    if recipe.early_stopping_threshold < 0:
        problems.append(f"early_stopping_threshold should be 0 or more but the value passed is "
                        f"{recipe.early_stopping_threshold}")
    if recipe.init_adapter and recipe.method != "lora":
        problems.append("init_adapter warm-starts LoRA matrices but method is full; use --method lora or "
                        "leave init_adapter unset")
    if recipe.head_learning_rate is not None and not recipe.head_learning_rate > 0:
        problems.append(f"head_learning_rate should be a positive number but the value passed is "
                        f"{recipe.head_learning_rate}; leave it unset to train the head at learning_rate")
    if recipe.loraplus_lr_ratio is not None and not recipe.loraplus_lr_ratio > 0:
        problems.append(f"loraplus_lr_ratio should be a positive number but the value passed is "
                        f"{recipe.loraplus_lr_ratio}; 16 is LoRA+'s usual choice, unset turns it off")
    if recipe.loraplus_lr_ratio is not None and recipe.method == "full":
        problems.append("loraplus_lr_ratio applies to LoRA's B matrices but method is full; use --method lora "
                        "or leave loraplus_lr_ratio unset")
    if recipe.use_dora and recipe.method == "full":
        problems.append("use_dora applies to LoRA's adapted layers but method is full; use --method lora or "
                        "leave use_dora unset")
    if recipe.load_in_4bit and recipe.load_in_8bit:
        problems.append("load_in_4bit and load_in_8bit are exclusive; pick one")
    if (recipe.load_in_4bit or recipe.load_in_8bit) and recipe.method == "full":
        problems.append("a quantised backbone cannot be fully fine-tuned; use --method lora with load_in_4bit/8bit")
    targets = recipe.lora_target_modules or []
    if "all-linear" in targets and len(targets) > 1:
        problems.append(f"lora_target_modules all-linear already names every linear layer but the value passed is "
                        f"{','.join(targets)}; pass all-linear alone or list modules without it")
    init_problem = _init_problem(recipe.init_lora_weights)
    if init_problem:
        problems.append(init_problem)
    if recipe.init_lora_weights not in (True, False) and recipe.lora_impl == "scratch" and not init_problem:
        problems.append(f"init_lora_weights {recipe.init_lora_weights!r} is PEFT's; the scratch LoRA layer starts "
                        "from true (B zero) or false only; use --lora_impl peft or leave it unset")
    if rewrites_base(recipe.init_lora_weights) and (recipe.load_in_4bit or recipe.load_in_8bit):
        problems.append(f"init_lora_weights {recipe.init_lora_weights!r} takes LoRA's start out of the base weights, "
                        "which a quantised backbone would round again; drop load_in_4bit/8bit or use gaussian")
    if (recipe.use_rslora or recipe.init_lora_weights is not True) and recipe.method == "full":
        problems.append("use_rslora and init_lora_weights apply to LoRA's matrices but method is full; use "
                        "--method lora or leave them unset")
    if recipe.train_file is None and recipe.dataset_name is None:
        problems.append("no data: set dataset_name (Hub id or local folder) or train_file")
    if recipe.method == "lora":
        try:
            from .lora_settings import validate_lora_settings

            validate_lora_settings(recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise UsageError("; ".join(problems))


def _label_problems(recipe: Recipe) -> list[str]:
    """What is wrong with the label keys (problem_type, metrics, threshold, class_weights, pos_label)."""
    problems = []
    kind = recipe.problem_type
    if kind not in PROBLEM_TYPES:
        return [f"problem_type should be one of {', '.join(PROBLEM_TYPES)} but the value passed is {kind!r}"]
    known = TASK_METRICS[kind]
    if not recipe.metrics or any(m not in known for m in recipe.metrics):
        problems.append(f"metrics for {kind} should be drawn from {', '.join(known)} but the value passed is "
                        f"{recipe.metrics}")
    if recipe.threshold is not None:
        if kind != MULTI_LABEL:
            problems.append(f"threshold applies to multi_label_classification but problem_type is {kind}; "
                            "leave threshold unset")
        elif not 0 < recipe.threshold < 1:
            problems.append(f"threshold should be between 0 and 1 (exclusive) but the value passed is "
                            f"{recipe.threshold}; 0.5 is the usual choice")
    if recipe.class_weights is not None:
        if kind == REGRESSION:
            problems.append("class_weights apply to classification but problem_type is regression; leave "
                            "class_weights unset")
        elif recipe.class_weights != ["balanced"] and not all(_positive(w) for w in recipe.class_weights):
            problems.append(f"class_weights should be balanced or one positive number per label but the value "
                            f"passed is {recipe.class_weights}")
    if recipe.pos_label is not None and kind != SINGLE_LABEL:
        problems.append(f"pos_label names the positive class of a single-label task but problem_type is {kind}; "
                        "leave pos_label unset")
    if kind == REGRESSION and recipe.label_names and len(recipe.label_names) != 1:
        problems.append(f"a regression has one target, so label_names should hold one name but holds "
                        f"{recipe.label_names}")
    return problems


def _positive(text) -> bool:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return False
    return 0 < value < float("inf")
