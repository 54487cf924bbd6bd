"""Inference: load a trained adapter once, its LoRA folded into the weights, and classify many texts fast.

    clf = Classifier.load("outputs/sst2")        # an output folder of train.py, a Hub repo id or a merged export
    clf.predict(["a gripping film", "dull"])     # [Prediction(label='positive', score=0.97, ...), ...]

Everything comes from the folder: the base model (adapter_config.json), the label names, text columns and maximum
length (labels.json), the tokenizer, and the LoRA implementation it was trained with (recipe.yaml). Weights are
read from safetensors only and no remote code runs.

Speed: the adapters this kit trains are merged into the base weights here (W0 + (alpha / r) B A), without
importing PEFT, whose import alone costs about a second per process; any other adapter goes through PEFT
(`adapters.load_adapter`) and `merge_and_unload`. Texts are tokenised in chunks, sorted by length and padded per
batch to the batch's longest row, so a batch of short texts costs little.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from .errors import UsageError
from .predictions import Predicting, Prediction, from_logits
from .runfolder import (ADAPTER_FILES, LABELS_FILE, METRICS_FILE, MODEL_FILES, RECIPE_FILE, SINGLE_LABEL,
                        TOKENIZER_FILE, LabelInfo, config_labels, read_json, read_labels, write_labels)
from .textio import Row, check_rows
# What an adapter needs from a Hub repo: configs, weights, tokenizer files, recipe. Not the card or plots.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.yaml"]
DEFAULT_RUNS = Path("outputs")  # where train.py saves unless told otherwise
_REPO_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
# LoraConfig options that change what a merged layer computes; the kit never sets them, so an adapter that does
# is merged by PEFT itself.
_NOT_PLAIN_LORA = ("use_dora", "use_rslora", "lora_bias", "fan_in_fan_out", "rank_pattern", "alpha_pattern",
                   "layer_replication", "trainable_token_indices", "target_parameters", "alora_invocation_tokens")


# ---------------------------------------------------------------------------------------------------------------
# Finding and reading the folder

def latest_run(root: Path = DEFAULT_RUNS) -> Path:
    """The most recently finished run under `root` (a folder with metrics.json beside adapter or model files)."""
    runs = [m.parent for m in root.glob(f"**/{METRICS_FILE}")
            if "checkpoint-" not in str(m.parent) and ((m.parent / ADAPTER_FILES[0]).exists()
                                                      or (m.parent / MODEL_FILES[0]).exists())]
    if not runs:
        raise UsageError(f"no --adapter given and no trained run under {str(root)!r}; pass --adapter with an "
                         "output folder of train.py or a Hub repo id, or train one: python train.py --task sst2")
    return max(runs, key=lambda p: (p / METRICS_FILE).stat().st_mtime)


def resolve_adapter(adapter: str | None) -> Path:
    """A local folder as is; a Hub repo id downloaded (or, with HF_HUB_OFFLINE=1, found in the local cache);
    None: the latest run under ./outputs. Raises UsageError when none of these exists."""
    if adapter is None:
        return latest_run()
    path = Path(adapter).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise UsageError(f"adapter {adapter!r} is a file; pass the folder that holds it (an output folder of "
                         "train.py) or a Hub repo id")
    if adapter.startswith((".", "/", "~")) or not _REPO_ID.fullmatch(adapter):
        raise UsageError(f"adapter folder {adapter!r} not found; pass an output folder of train.py or a Hub repo "
                         "id such as user/name")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, HfHubHTTPError

    try:
        return Path(snapshot_download(adapter, allow_patterns=HUB_PATTERNS))
    except (OSError, HfHubHTTPError, HFValidationError) as err:
        if constants.HF_HUB_OFFLINE:
            raise UsageError(f"adapter {adapter!r} is neither a local folder nor a Hub repo in the local cache "
                             "(HF_HUB_OFFLINE=1); check the path or repo id, or fetch it once online") from None
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"adapter {adapter!r} is neither a local folder nor a Hub repo you can reach ({reason}); "
                         "check the path or repo id, and log in with `hf auth login` for a private repo") from None


@dataclass
class ModelFolder:
    """What a trained folder says about itself. `base_model` is None when it holds a whole model (a method=full
    run or a merged export) rather than an adapter."""

    path: Path
    label_names: list[str] | None
    text_columns: list[str]
    max_seq_length: int | None
    base_model: str | None
    adapter_config: dict = field(default_factory=dict)
    lora_impl: str = "peft"
    from_kit: bool = False  # trained by this kit (recipe.yaml beside it), hence plain LoRA
    quantized_bits: int | None = None  # the backbone was trained 4- or 8-bit (QLoRA): merge into those weights
    problem_type: str | None = None  # from labels.json; None without one (a foreign model: its config says)
    threshold: float | None = None  # multi-label decision threshold from labels.json

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2


def read_folder(path: Path, base_model: str | None = None) -> ModelFolder:
    """Check that `path` holds a complete adapter (or model) folder and read its settings; `base_model`
    overrides the backbone the adapter names. Raises UsageError naming any missing file."""
    is_adapter = (path / ADAPTER_FILES[0]).exists()
    if not is_adapter and not (path / MODEL_FILES[0]).exists():
        raise UsageError(f"{str(path)!r} holds neither an adapter (adapter_config.json) nor a model (config.json); "
                         "pass an output folder of train.py, a merged export or a Hub repo id")
    needed = [*(ADAPTER_FILES if is_adapter else MODEL_FILES), TOKENIZER_FILE] + ([LABELS_FILE] if is_adapter else [])
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        pickled = " (it has pickle weights only, which are not loaded: re-save them as safetensors)" \
            if "model.safetensors" in missing and any(path.glob("*.bin")) else ""
        raise UsageError(f"folder {str(path)!r} is missing {', '.join(missing)}{pickled}; pass a complete output "
                         "folder of train.py (copy all of its files) or a Hub repo id")
    labels = read_labels(path, required=False)
    recipe = {}
    if (path / RECIPE_FILE).exists():
        import yaml

        recipe = yaml.safe_load((path / RECIPE_FILE).read_text(encoding="utf-8")) or {}
    adapter_config = read_json(path / ADAPTER_FILES[0], "adapter config") if is_adapter else {}
    base = base_model or adapter_config.get("base_model_name_or_path")
    if is_adapter and not base:
        raise UsageError(f"adapter config in {str(path)!r} names no base_model_name_or_path; pass --base_model")
    return ModelFolder(path=path, label_names=labels.label_names if labels else None,
                       text_columns=labels.text_columns if labels else ["text"],
                       max_seq_length=labels.max_seq_length if labels else None,
                       base_model=base if is_adapter else None,
                       adapter_config=adapter_config, lora_impl=recipe.get("lora_impl", "peft"),
                       from_kit=bool(recipe),
                       quantized_bits=4 if recipe.get("load_in_4bit") else 8 if recipe.get("load_in_8bit") else None,
                       problem_type=labels.problem_type if labels else None,
                       threshold=labels.threshold if labels else None)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types, or OSError, for a damaged file
        raise UsageError(f"{str(path)!r} is corrupt or not a safetensors file ({str(err).splitlines()[0]}); "
                         "copy it again from the run that made it") from None


# ---------------------------------------------------------------------------------------------------------------
# Loading the model

@contextlib.contextmanager
def quiet_transformers():
    """While loading: no load report (the base's head is new by design, the adapter brings it), no progress bars.
    The previous settings come back afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_base(name: str, label_names: list[str], folder: Path, quantized_bits: int | None = None,
               problem_type: str = SINGLE_LABEL, pad_token_id: int | None = None):
    """The backbone with a classification head for `label_names`, and the parameter names it lacked. A config
    without a pad token id gets `pad_token_id` (the run's tokenizer's): decoder classifiers find each row's last
    token by it, and refuse batches of two or more without it.

    For a QLoRA adapter (`quantized_bits`), the backbone is loaded quantised as in training and dequantised to
    fp32: the adapter was fitted to those rounded weights (lorakit/quantization.py says why)."""
    def failed(err: Exception) -> UsageError:
        return UsageError(f"base model {name!r} of adapter {str(folder)!r} could not be loaded "
                          f"({str(err).splitlines()[0]}); pass --base_model with a local copy of it or a Hub id in "
                          "your cache")

    try:
        config = AutoConfig.from_pretrained(name, **config_labels(label_names, problem_type), trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise failed(err) from None
    if config.get_text_config().pad_token_id is None and pad_token_id is not None:
        config.get_text_config().pad_token_id = config.pad_token_id = pad_token_id
    kwargs = {}
    if quantized_bits:
        from .quantization import quantized_load_kwargs

        kwargs = quantized_load_kwargs(quantized_bits, config)
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            name, config=config, dtype=torch.float32, use_safetensors=True, trust_remote_code=False,
            output_loading_info=True, **kwargs)
    except (OSError, ValueError) as err:
        raise failed(err) from None
    if quantized_bits:
        model = model.dequantize(dtype=torch.float32)
    return model, set(info["missing_keys"])


def _mismatch(folder: Path, base: str, detail: str) -> UsageError:
    return UsageError(f"adapter {str(folder)!r} does not fit base model {base!r}: {detail}; it was trained on "
                      "another base model, so pass that one with --base_model")


def merge_lora(model: torch.nn.Module, tensors: dict[str, torch.Tensor], adapter_config: dict, *, folder: Path,
               base: str, num_labels: int, untrained: set[str]) -> None:
    """Fold a plain LoRA adapter into `model` in place: W0 += (lora_alpha / r) B A for every adapted Linear, and
    the saved head (PEFT's modules_to_save) copied over. Every saved tensor must find its place in `model` with
    its shape, and every parameter `model` lacked in its checkpoint (`untrained`) must come from the adapter;
    otherwise UsageError (the adapter belongs to another base model, or to another number of labels)."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    replaced: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        name = key.removeprefix("base_model.model.")
        lora = re.fullmatch(r"(.+)\.lora_([AB])\.weight", name)
        if lora:
            if not isinstance(modules.get(lora[1]), torch.nn.Linear):
                raise _mismatch(folder, base, f"it adapts {lora[1]!r}, which is not a linear layer of the base")
            pairs.setdefault(lora[1], {})[lora[2]] = value
        elif name in params:
            want = tuple(params[name].shape)
            if tuple(value.shape) != want:
                if want[:1] == (num_labels,) and value.ndim == len(want):
                    raise UsageError(f"adapter {str(folder)!r} has a classifier for {value.shape[0]} labels but its "
                                     f"labels.json names {num_labels}; the files come from different runs, so "
                                     "restore labels.json from the run that trained the adapter")
                raise _mismatch(folder, base, f"{name} is {list(value.shape)} in the adapter, {list(want)} in the base")
            replaced[name] = value
        else:
            raise _mismatch(folder, base, f"the base has no parameter {name!r}")
    lacking = sorted(untrained - set(replaced))
    if lacking:
        raise UsageError(f"adapter {str(folder)!r} holds no trained weights for {lacking[0]} of base model {base!r}, "
                         "so its predictions would be random; pass the complete adapter folder train.py saved")
    with torch.no_grad():
        for module_name, ab in pairs.items():
            if set(ab) != {"A", "B"}:
                raise UsageError(f"adapter {str(folder)!r} is damaged: {module_name} lacks lora_"
                                 f"{'B' if 'A' in ab else 'A'}; copy it again from the run that made it")
            layer = modules[module_name]
            a, b = ab["A"], ab["B"]
            if a.shape[1] != layer.in_features or b.shape[0] != layer.out_features or a.shape[0] != b.shape[1]:
                raise _mismatch(folder, base, f"{module_name} is {layer.in_features}->{layer.out_features} in the "
                                              f"base, {a.shape[1]}->{b.shape[0]} in the adapter")
            scaling = adapter_config["lora_alpha"] / a.shape[0]
            layer.weight += (b.float() @ a.float()).to(layer.weight.dtype) * scaling
        for name, value in replaced.items():
            params[name].copy_(value)


def _load_with_peft(base_model: torch.nn.Module, info: ModelFolder, base: str, merge: bool) -> torch.nn.Module:
    """PEFT's own loader for adapters that are not plain LoRA (or when merge=False is asked for)."""
    from . import adapters

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = adapters.load_adapter(base_model, str(info.path), impl=info.lora_impl)
        except RuntimeError as err:  # torch's load_state_dict: "size mismatch for ..."
            raise _mismatch(info.path, base, str(err).strip().splitlines()[-1].strip()) from None
    missing = [w for w in caught if "missing adapter keys" in str(w.message)]
    if missing:
        raise _mismatch(info.path, base, "the base lacks modules the adapter was trained on")
    return model.merge_and_unload() if merge else model


def _load_tokenizer(folder: Path):
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise UsageError(f"the tokenizer in {str(folder)!r} could not be loaded ({str(err).splitlines()[0]}); "
                         "copy the tokenizer files again from the run that made it") from None
    if tokenizer.pad_token is None:  # an adapter trained elsewhere, on a decoder LLM's tokenizer as shipped
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def _load_model(info: ModelFolder, tokenizer, merge: bool) -> tuple[torch.nn.Module, list[str]]:
    """The classifier in fp32 and its label names: a whole model as saved, or the base with the adapter merged
    (by `merge_lora` for the kit's own adapters, else by PEFT) or attached unmerged (merge=False)."""
    if info.base_model is None:
        model = _load_full_model(info.path)
        return model, info.label_names or [model.config.id2label[i] for i in range(model.config.num_labels)]
    labels, base = info.label_names, info.base_model
    tensors = _read_safetensors(info.path / ADAPTER_FILES[1])
    model, untrained = _load_base(base, labels, info.path, info.quantized_bits, info.problem_type or SINGLE_LABEL,
                                  tokenizer.pad_token_id)
    embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > embeddings:
        raise _mismatch(info.path, base, f"its tokenizer has {len(tokenizer)} tokens, the base's embeddings "
                                         f"{embeddings}")
    plain = info.from_kit and info.adapter_config.get("peft_type", "LORA") == "LORA" \
        and not any(info.adapter_config.get(k) for k in _NOT_PLAIN_LORA)
    if merge and plain:
        merge_lora(model, tensors, info.adapter_config, folder=info.path, base=base, num_labels=len(labels),
                   untrained=untrained)
        return model, labels
    return _load_with_peft(model, info, base, merge), labels


def _load_full_model(folder: Path) -> torch.nn.Module:
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(folder), dtype=torch.float32, use_safetensors=True, trust_remote_code=False, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise UsageError(f"the model in {str(folder)!r} could not be loaded ({str(err).splitlines()[0]}); "
                         "copy it again from the run that made it") from None
    if info["missing_keys"]:
        raise UsageError(f"the model in {str(folder)!r} holds no trained weights for "
                         f"{sorted(info['missing_keys'])[0]}, so it is not a trained classifier; pass an output "
                         "folder of train.py or a merged export")
    return model


def _model_max_length(tokenizer, config) -> int:
    limit = getattr(config, "max_position_embeddings", 512) or 512
    if config.model_type in ("roberta", "xlm-roberta"):
        limit -= 2  # RoBERTa reserves two positions for its padding offset
    return min(limit, tokenizer.model_max_length, 512)


def resolve_dtype(precision: str) -> torch.dtype:
    """fp32, bf16, or auto: bf16 where the device computes it natively (a GPU with bf16, a CPU with AVX-512-BF16
    or AMX), else fp32. The weights are merged in fp32 first and cast after; probabilities are computed in fp32.
    bench/inference.py measures the gain (about 2x on an AVX-512-BF16 CPU) and the agreement with fp32."""
    from .hardware import cpu_has_bf16

    if precision not in ("auto", "fp32", "bf16"):
        raise UsageError(f"precision should be auto, fp32 or bf16 but the value passed is {precision!r}")
    if precision == "auto":
        native = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_has_bf16()
        return torch.bfloat16 if native else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


# ---------------------------------------------------------------------------------------------------------------
# Predicting

class Classifier(Predicting):
    """A text classifier ready to predict: load once with `Classifier.load`, then `predict` or `predict_stream`."""

    def __init__(self, model: torch.nn.Module, tokenizer, label_names: list[str], *, text_columns: list[str],
                 max_length: int, batch_size: int = 64, source: str = "", problem_type: str = SINGLE_LABEL,
                 threshold: float | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.label_names = label_names
        self.text_columns = text_columns
        self.is_pair = len(text_columns) == 2
        self.max_length = max_length
        self.batch_size = batch_size
        self.source = source
        self.problem_type = problem_type
        self.threshold = threshold  # multi-label: a label is predicted above it (None: 0.5)
        self.truncated = 0  # texts cut to max_length so far
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, adapter: str | None = None, *, base_model: str | None = None, precision: str = "auto",
             batch_size: int = 64, merge: bool = True, device: str | None = None) -> "Classifier":
        """Load an output folder of train.py, a Hub repo id, a merged export (or, with None, the latest run under
        ./outputs). `merge=False` keeps the LoRA layers separate (for comparison; slower). Raises UsageError."""
        return cls.from_folder(read_folder(resolve_adapter(adapter), base_model), precision=precision,
                               batch_size=batch_size, merge=merge, device=device)

    @classmethod
    def from_folder(cls, info: ModelFolder, *, precision: str = "auto", batch_size: int = 64, merge: bool = True,
                    device: str | None = None) -> "Classifier":
        """`load` for a folder already read with `read_folder` (so that a caller can check its input first)."""
        dtype = resolve_dtype(precision)
        if batch_size < 1:
            raise UsageError(f"batch_size should be a positive integer but the value passed is {batch_size}")
        with quiet_transformers():
            tokenizer = _load_tokenizer(info.path)
            model, labels = _load_model(info, tokenizer, merge)
        max_length = info.max_seq_length or _model_max_length(tokenizer, model.config)
        if device:
            model = model.to(device)
        elif torch.cuda.is_available():
            model = model.to("cuda")
        model = model.to(dtype)
        problem_type = info.problem_type or getattr(model.config, "problem_type", None) or SINGLE_LABEL
        return cls(model, tokenizer, labels, text_columns=info.text_columns, max_length=max_length,
                   batch_size=batch_size, source=str(info.path), problem_type=problem_type, threshold=info.threshold)

    @property
    def label_info(self) -> LabelInfo:
        """What labels.json says of this classifier (its label names, inputs, problem type, threshold)."""
        return LabelInfo(label_names=list(self.label_names), text_columns=list(self.text_columns),
                         max_seq_length=self.max_length, problem_type=self.problem_type, threshold=self.threshold)

    # -- the fast path -------------------------------------------------------------------------------------------

    def _encode(self, rows: Sequence[Row]) -> tuple[dict[str, list[list[int]]], list[bool]]:
        texts = [r.text for r in rows]
        pairs = [r.pair for r in rows] if self.is_pair else None
        enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        # Only a text that fills max_length can have been cut; encode just those again, uncut, to find out.
        full = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) >= self.max_length]
        cut = [False] * len(rows)
        if full:
            again = self.tokenizer([texts[i] for i in full], [pairs[i] for i in full] if pairs else None)
            for i, ids in zip(full, again["input_ids"]):
                cut[i] = len(ids) > self.max_length
        return dict(enc), cut

    def _pad(self, enc: dict[str, list[list[int]]], order: list[int]) -> dict[str, torch.Tensor]:
        width = max(len(enc["input_ids"][i]) for i in order)
        batch = {}
        for key, rows in enc.items():
            fill = self.tokenizer.pad_token_id if key == "input_ids" else 0
            tensor = torch.full((len(order), width), fill, dtype=torch.long)
            for j, i in enumerate(order):
                tensor[j, :len(rows[i])] = torch.tensor(rows[i])
            batch[key] = tensor.to(self.device)
        return batch

    @torch.inference_mode()
    def _logits(self, rows: Sequence[Row]) -> tuple[torch.Tensor, list[bool]]:
        enc, cut = self._encode(rows)
        lengths = [len(ids) for ids in enc["input_ids"]]
        order = sorted(range(len(rows)), key=lengths.__getitem__)
        out = torch.empty(len(rows), len(self.label_names))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            out[chunk] = self.model(**self._pad(enc, chunk)).logits.float().cpu()
        return out, cut

    def logits(self, rows: Sequence[Row]) -> torch.Tensor:
        """The model's outputs for `rows` (float32, one row each, in their order), as scoring wants them."""
        check_rows(rows, pair=self.is_pair, source=self.source)
        logits, cut = self._logits(rows)
        self.truncated += sum(cut)
        return logits

    def predict_rows(self, rows: Sequence[Row]) -> list[Prediction]:
        """Predictions for `rows`, in their order. Raises UsageError for an empty text or the wrong arity."""
        if not rows:
            return []
        check_rows(rows, pair=self.is_pair, source=self.source)
        logits, cut = self._logits(rows)
        self.truncated += sum(cut)
        return from_logits(rows, logits.numpy(), self.label_info, cut)


def check_export_dir(dest: Path, overwrite: bool) -> None:
    """UsageError unless `dest` is new, an empty folder, or a folder the user allowed to overwrite."""
    if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not overwrite)):
        raise UsageError(f"export folder {str(dest)!r} {'is a file' if not dest.is_dir() else 'is not empty'}; "
                         "pass a new folder with --output_dir" + ("" if not dest.is_dir() else ", or --overwrite"))


def export_merged(adapter: str | None, dest: Path, *, base_model: str | None = None,
                  overwrite: bool = False) -> Path:
    """Write `adapter` as a full model folder in `dest`: LoRA folded into the weights, the head included, the
    label names in config.json, the tokenizer and labels.json beside it. transformers alone loads it
    (`from_pretrained`, `pipeline`); no PEFT needed. Written aside and renamed into place: all or nothing."""
    from .fileio import staged_folder

    check_export_dir(dest, overwrite)
    classifier = Classifier.load(adapter, base_model=base_model, precision="fp32")
    # So that `pipeline(..., truncation=True)` cuts where training did.
    classifier.tokenizer.model_max_length = classifier.max_length
    with staged_folder(dest, last=MODEL_FILES[0]) as stage, quiet_transformers():
        classifier.model.save_pretrained(stage)
        classifier.tokenizer.save_pretrained(stage)
        write_labels(stage, classifier.label_info)
    return dest
