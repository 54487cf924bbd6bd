"""Model: a sequence classifier with LoRA (PEFT's layer or ours) or fully trainable, and its parameter report."""

from __future__ import annotations

import contextlib
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
from transformers.pytorch_utils import Conv1D

from .errors import UsageError
from .recipe import Recipe
from .runfolder import config_labels

# Default LoRA targets: PEFT's own per-architecture table (the attention projections the LoRA paper adapts, query
# and value, by each architecture's names), and the kit's entries only where PEFT's table has none.
DEFAULT_TARGETS = {
    # PEFT's table has no DistilBERT; q_lin and v_lin are its query and value.
    "distilbert": ["q_lin", "v_lin"],
}
ALL_LINEAR = "all-linear"  # PEFT's keyword: every linear layer outside the head
# The head PEFT's SEQ_CLS task trains and saves by itself; anything else the head is made of goes in
# modules_to_save.
HEAD_MODULES = ("classifier", "score")


def load_config(recipe: Recipe, label_names: list[str]) -> PretrainedConfig:
    """The backbone's config with the task's labels, from a Hub id or a local folder."""
    path = recipe.model_name_or_path
    if path.startswith((".", "/", "~")) and not Path(path).expanduser().is_dir():
        raise UsageError(f"model folder {path!r} not found; pass an existing folder or a Hub model id "
                         "with --model_name_or_path")
    try:
        config = AutoConfig.from_pretrained(path, **config_labels(label_names, recipe.problem_type),
                                            trust_remote_code=recipe.trust_remote_code)
    except OSError as err:
        raise UsageError(f"model {path!r} could not be loaded ({str(err).splitlines()[0]}); pass a local "
                         "folder or a Hub id you can reach with --model_name_or_path") from None
    if config.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES \
            and "AutoModelForSequenceClassification" not in (getattr(config, "auto_map", None) or {}):
        raise UsageError(f"model type {config.model_type!r} has no sequence-classification class in transformers "
                         "(AutoModelForSequenceClassification); pick a backbone that has one")
    return config


def load_tokenizer(recipe: Recipe):
    """The backbone's tokenizer, padding on the right, with a pad token (see `pad_token_for`)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(recipe.model_name_or_path,
                                                  trust_remote_code=recipe.trust_remote_code)
    except OSError as err:
        raise UsageError(f"tokenizer of {recipe.model_name_or_path!r} could not be loaded "
                         f"({str(err).splitlines()[0]}); the model folder needs its tokenizer files") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = pad_token_for(tokenizer, recipe.model_name_or_path)
    # Decoder classifiers pool the last token that is not padding. Under causal attention no token sees the pads
    # after it, so padded on the right a row's logits are those it gets alone; some LLM tokenizers ship
    # padding_side="left", which shifts every position instead.
    tokenizer.padding_side = "right"
    return tokenizer


def pad_token_for(tokenizer, name: str) -> str:
    """A pad token for a tokenizer that has none (decoder LLMs ship without): its end-of-sequence token, else its
    beginning-of-sequence or unknown token. An existing token, so the embeddings keep their size; padding is
    masked, and the classifier pools the last token before it."""
    for token in (tokenizer.eos_token, tokenizer.bos_token, tokenizer.unk_token):
        if token is not None:
            return token
    raise UsageError(f"the tokenizer of {name!r} has no pad, end-of-sequence, beginning-of-sequence or unknown "
                     "token to pad with; add a pad token to its tokenizer files")


def use_pad_token(model: torch.nn.Module, tokenizer) -> None:
    """Give the classifier's config the tokenizer's pad token id when it has none.

    Decoder classifiers find each row's last token by that id, and refuse batches of two or more without it
    ("Cannot handle batch sizes > 1 if no padding token is defined"). The run folder's tokenizer keeps the pad
    token; inference sets it on the base model's config again, and a merged export saves it in config.json."""
    config = model.config.get_text_config()
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
        model.config.pad_token_id = tokenizer.pad_token_id


def check_seq_length(recipe: Recipe, config: PretrainedConfig) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    # RoBERTa reserves two positions for the padding offset.
    usable = limit - 2 if limit and config.model_type in ("roberta", "xlm-roberta") else limit
    if usable and recipe.max_seq_length > usable:
        raise UsageError(f"max_seq_length {recipe.max_seq_length} exceeds the model's limit of {usable} tokens; "
                         f"set --max_seq_length {usable} or less")


def target_modules(recipe: Recipe, config: PretrainedConfig) -> list[str] | str:
    """The recipe's LoRA targets (a list of module names, or PEFT's "all-linear"), else the architecture's
    default: the kit's table, then PEFT's (a list, or a regular expression PEFT matches whole names against).
    An architecture neither knows is a UsageError (`check_lora_targets` lists what the model has)."""
    if recipe.lora_target_modules:
        if recipe.lora_target_modules == [ALL_LINEAR]:
            return ALL_LINEAR
        return list(recipe.lora_target_modules)
    default = DEFAULT_TARGETS.get(config.model_type) or PEFT_TARGETS.get(config.model_type)
    if default is None:
        raise UsageError(f"no default LoRA target modules for model type {config.model_type!r}; "
                         f"set --lora_target_modules (e.g. {ALL_LINEAR})")
    return default if isinstance(default, str) else list(default)


def classifier_head(model: torch.nn.Module) -> list[str]:
    """The modules the classifier's head is made of, found in the model itself: every top-level module beside the
    backbone that holds weights (`classifier`, `score`, DeBERTa's ContextPooler `pooler`, DistilBERT's
    `pre_classifier`, BART's `classification_head`, ...) and any `pooler` inside the backbone (BERT's).

    All of them train in full, so that every architecture trains the same head: RoBERTa keeps its dense + tanh
    layer inside `classifier`, BERT, DeBERTa and DistilBERT keep it outside (pooler, pre_classifier). DeBERTa's ContextPooler is not in the pretrained
    checkpoint at all (PEFT's troubleshooting guide calls this out), and sentence-embedding checkpoints such as
    all-MiniLM-L6-v2 ship a BERT pooler their mean-pooling training never used. Frozen, it cost LoRA 12 points
    of MRPC accuracy against full fine-tuning; trained, 0.5 (EXPERIMENTS.md). `lora_modules_to_save` overrides.
    """
    model = model.get_base_model() if isinstance(model, PeftModel) else model
    backbone = getattr(model, "base_model_prefix", None)
    if not backbone or not hasattr(model, backbone):  # not a transformers classifier: no head to tell
        return []
    head = [name for name, child in model.named_children()
            if name != backbone and any(True for _ in child.parameters())]
    head += [name.rsplit(".", 1)[-1] for name, m in getattr(model, backbone).named_modules()
             if name.rsplit(".", 1)[-1] == "pooler" and any(True for _ in m.parameters())]
    return list(dict.fromkeys(head))


def head_of(recipe: Recipe, config: PretrainedConfig, model: torch.nn.Module | None = None) -> list[str]:
    """`classifier_head` of `model`, or of the recipe's classifier built weightless from `config`."""
    if model is None:
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(
                config, trust_remote_code=recipe.trust_remote_code)
    return classifier_head(model)


def modules_to_save(recipe: Recipe, config: PretrainedConfig, model: torch.nn.Module | None = None) -> list[str]:
    """Modules trained in full beside the classifier (which PEFT's SEQ_CLS task always trains): the recipe's
    `lora_modules_to_save`, else the rest of the model's head (`classifier_head`)."""
    if recipe.lora_modules_to_save is not None:
        return list(recipe.lora_modules_to_save)
    return [name for name in head_of(recipe, config, model) if name not in HEAD_MODULES]


def head_modules(recipe: Recipe, config: PretrainedConfig, model: torch.nn.Module | None = None) -> list[str]:
    """The head's module names, which `head_learning_rate` applies to: the SEQ_CLS heads and modules_to_save."""
    return [*HEAD_MODULES, *modules_to_save(recipe, config, model)]


def is_head_parameter(name: str, modules: list[str]) -> bool:
    """Whether a parameter (by its dotted name, PEFT's or a DDP/FSDP wrapper's prefixes included) belongs to one
    of the head `modules`; LoRA matrices never do, even inside a module so named."""
    if _LORA_PARAM.search(name):
        return False
    dotted = f".{name}."
    return any(f".{module}." in dotted for module in modules)


def is_lora_b_parameter(name: str) -> bool:
    """Whether a parameter is a LoRA B matrix (PEFT's and lorakit/adapters/ names: ...lora_B.<adapter>.weight)."""
    return _LORA_B_PARAM.search(name) is not None


def head_weights(recipe: Recipe, config: PretrainedConfig, model: torch.nn.Module) -> int:
    """How many trainable weights `head_learning_rate` applies to; none is a UsageError (nothing to apply it to)."""
    modules = head_modules(recipe, config, model)
    count = sum(_numel(p) for n, p in model.named_parameters() if p.requires_grad and is_head_parameter(n, modules))
    if not count:
        raise UsageError(f"head_learning_rate is set but no trainable parameter belongs to the head modules "
                         f"{modules}; name the head with lora_modules_to_save or leave head_learning_rate unset")
    return count


def lora_config(recipe: Recipe, config: PretrainedConfig, model: torch.nn.Module | None = None) -> LoraConfig:
    """PEFT's LoraConfig for the recipe; task SEQ_CLS keeps the classification head trainable and saved, and the
    rest of the head (`modules_to_save`) trains and saves with it."""
    extra = modules_to_save(recipe, config, model)
    targets = target_modules(recipe, config)
    # PEFT's all-linear leaves out `classifier` or `score` only; the rest of the head trains in full instead.
    exclude = None
    if targets == ALL_LINEAR:
        head = [*HEAD_MODULES, *extra]
        exclude = rf"(.*\.)?({'|'.join(map(re.escape, head))})(\..*)?"
    # A weightless (meta) model only counts parameters; PiSSA's SVD and the like have no numbers to work on.
    weightless = model is not None and any(p.is_meta for p in model.parameters())
    cfg = LoraConfig(
        task_type="SEQ_CLS", r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
        use_dora=recipe.use_dora, use_rslora=recipe.use_rslora,
        init_lora_weights=True if weightless else recipe.init_lora_weights,
        target_modules=targets, exclude_modules=exclude, layers_to_transform=recipe.lora_layers,
        # A copy: PEFT appends the SEQ_CLS heads to this list in place.
        modules_to_save=list(extra) or None)
    if recipe.lora_impl == "scratch":
        from . import adapters

        try:
            adapters.register(cfg)
        except ValueError as err:  # an option the scratch layer lacks
            raise UsageError(str(err)) from None
    return cfg


def _num_layers(config: PretrainedConfig) -> int | None:
    return getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)


def linear_layers(model: torch.nn.Module) -> dict[str, int]:
    """The model's layers LoRA can adapt (nn.Linear, GPT-2's Conv1D) outside its head, counted by name suffix
    (the last part of the dotted name), in the order the model first has them."""
    head = set(HEAD_MODULES) | set(classifier_head(model))
    counts: Counter = Counter()
    for name, module in model.named_modules():
        parts = name.split(".")
        if isinstance(module, (torch.nn.Linear, Conv1D)) and not head & set(parts) and ".lora_" not in f".{name}":
            counts[parts[-1]] += 1
    return dict(counts)


def _suggest(layers: dict[str, int]) -> str:
    """A --lora_target_modules value that works for a model with these linear layers: its query and value
    projections when their names say so (as the LoRA paper adapts), else all-linear."""
    pick = [next((n for n in layers if re.fullmatch(rf"{kind}(_?proj|_lin)?", n)), None)
            for kind in ("q|query", "v|value")]
    return ",".join(pick) if all(pick) else ALL_LINEAR


def _matches(target: str, name: str) -> bool:
    return name == target or name.endswith("." + target)


def check_lora_targets(recipe: Recipe, model: torch.nn.Module, config: PretrainedConfig) -> None:
    """A target that matches no linear layer, a model with no default targets, or a layer index out of range is an
    error before any training; the first two name the linear layers the model has and a setting that works."""
    layers = linear_layers(model)
    listing = ", ".join(f"{name} ({count})" for name, count in layers.items())
    if not recipe.lora_target_modules and config.model_type not in DEFAULT_TARGETS | PEFT_TARGETS:
        raise UsageError(f"no default LoRA target modules for model type {config.model_type!r}; its linear layers "
                         f"are {listing}; set e.g. --lora_target_modules {_suggest(layers)}")
    targets = target_modules(recipe, config)
    names = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))]
    if targets != ALL_LINEAR:
        for target in [targets] if isinstance(targets, str) else targets:
            found = any(re.fullmatch(target, n) for n in names) if isinstance(targets, str) \
                else any(_matches(target, n) for n in names)
            if not found:
                raise UsageError(f"LoRA target module {target!r} matches nothing in {config.model_type}; its linear "
                                 f"layers are {listing}; set e.g. --lora_target_modules {_suggest(layers)}")
    modules = [n for n, _ in model.named_modules()]
    for extra in modules_to_save(recipe, config, model):
        if not any(_matches(extra, n) for n in modules):
            raise UsageError(f"lora_modules_to_save {extra!r} matches no module of {config.model_type}; name a "
                             "module the model has (e.g. pooler) or leave the key unset")
    count = _num_layers(config)
    if recipe.lora_layers and count is not None:
        bad = [i for i in recipe.lora_layers if not 0 <= i < count]
        if bad:
            raise UsageError(f"lora_layers {bad} out of range: the model has layers 0-{count - 1}; "
                             f"pass e.g. --lora_layers 0-{count - 1}")


def apply_method(recipe: Recipe, model: torch.nn.Module, config: PretrainedConfig) -> torch.nn.Module:
    """Wrap the backbone with LoRA (or leave it fully trainable for method=full)."""
    if recipe.method == "full":
        return model
    check_lora_targets(recipe, model, config)
    return get_peft_model(model, lora_config(recipe, config, model))


@contextlib.contextmanager
def _attention_errors(recipe: Recipe, config: PretrainedConfig):
    """transformers' ValueError for an attention kernel the architecture lacks (DeBERTa has no SDPA) as a UsageError."""
    try:
        yield
    except ValueError as err:
        if not recipe.attn_implementation or not re.search(r"attn_implementation|attention implementation", str(err)):
            raise
        raise UsageError(f"attn_implementation {recipe.attn_implementation!r} is not available for "
                         f"{config.model_type}; pass --attn_implementation eager or leave it unset") from None


def build_model(recipe: Recipe, config: PretrainedConfig, *, random_weights: bool = False,
                notes: list[str] | None = None) -> torch.nn.Module:
    """The classifier ready to train. `random_weights` builds from the config alone on the meta device
    (no download, no memory), which is all a parameter count needs. `notes` receives one line saying which
    weights were not in the checkpoint (the new head); transformers' own load report shows under --debug only."""
    kwargs = {"attn_implementation": recipe.attn_implementation} if recipe.attn_implementation else {}
    if random_weights:
        with torch.device("meta"), _attention_errors(recipe, config):
            model = AutoModelForSequenceClassification.from_config(config, **kwargs)
    else:
        if recipe.load_in_4bit or recipe.load_in_8bit:
            from .quantization import quantization_kwargs

            kwargs.update(quantization_kwargs(recipe, config))
        from .inference import quiet_transformers

        debug = logging.getLogger("lorakit").isEnabledFor(logging.DEBUG)
        try:
            with _attention_errors(recipe, config), contextlib.nullcontext() if debug else quiet_transformers():
                model, info = AutoModelForSequenceClassification.from_pretrained(
                    recipe.model_name_or_path, config=config, dtype=torch.float32, output_loading_info=True,
                    trust_remote_code=recipe.trust_remote_code, use_safetensors=True, **kwargs)
        except OSError as err:
            raise UsageError(f"weights of {recipe.model_name_or_path!r} could not be loaded "
                             f"({str(err).splitlines()[0]}); the folder needs model.safetensors") from None
        if notes is not None:
            notes.append(new_weights_note(info["missing_keys"], config))
        if recipe.load_in_4bit or recipe.load_in_8bit:
            from .quantization import prepare_quantized

            model = prepare_quantized(model)
    return apply_method(recipe, model, config)


def new_weights_note(missing: list[str], config: PretrainedConfig) -> str:
    """One line on the weights the checkpoint lacked, which start random: normally just the new head."""
    modules = sorted({name.rsplit(".", 1)[0] for name in missing})
    head = sorted({m.split(".")[0] for m in modules if m.split(".")[0] in HEAD_MODULES})  # RoBERTa's: dense, out_proj
    other = [m for m in modules if m.split(".")[0] not in HEAD_MODULES]
    if not modules:
        return "head loaded from the checkpoint (no new weights)"
    line = f"head initialised: {', '.join(head)} ({config.num_labels} labels)" if head else ""
    if other:
        line += ("; " if line else "") + f"also initialised (not in the checkpoint): {', '.join(other)}"
    return line


def prepare(recipe: Recipe, label_names: list[str], *, load_weights: bool = True):
    """The classifier with LoRA applied, its config and its parameter report.

    The parameter count and the budget are checked on a weightless (meta-device) copy first, so a run over
    budget or with a bad LoRA target fails before any weights are read. With load_weights=False (a dry run)
    the meta model is returned. Returns (config, model, report); raises UsageError.
    """
    config = load_config(recipe, label_names)
    check_seq_length(recipe, config)
    model = build_model(recipe, config, random_weights=True)
    params = param_report(model)
    check_budget(recipe, params)
    if recipe.head_learning_rate is not None:
        head_weights(recipe, config, model)  # fails before any weights are read
    if load_weights:
        notes: list[str] = []
        model = build_model(recipe, config, notes=notes)
        params = param_report(model)
        params.notes = notes
    return config, model, params


def store_frozen_linears(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Keep every frozen nn.Linear (weight and bias) in `dtype`, the autocast dtype; returns how many.

    Autocast casts a Linear's fp32 weight to bf16/fp16 at every call, and caches nothing for weights that need no
    gradient: each step re-reads and re-writes every frozen matrix. Stored in that dtype already, the forward and
    backward compute exactly the same numbers (tests/test_train.py checks bit-equality), the step is faster and
    the frozen weights take half the memory. LoRA matrices, the head and every non-Linear weight (embeddings,
    LayerNorm) stay fp32.
    """
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and not any(p.requires_grad for p in module.parameters()):
            module.to(dtype)
            count += 1
    return count


@dataclass
class ParamReport:
    total: int
    trainable: int
    lora: int
    head: int
    notes: list[str] = field(default_factory=list)  # what loading the weights left new (the head)

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total

    def lines(self) -> list[str]:
        return [f"parameters: {self.total:,} total, {self.trainable:,} trainable ({self.percent:.3f}%)",
                f"trainable split: {self.lora:,} in LoRA matrices, {self.head:,} in the head and other "
                "trainable modules", *self.notes]

    def as_dict(self) -> dict:
        return {"total_params": self.total, "trainable_params": self.trainable,
                "trainable_percent": round(self.percent, 4), "lora_params": self.lora, "head_params": self.head}


_LORA_PARAM = re.compile(r"\blora_[AB]\b|\.lora_")
_LORA_B_PARAM = re.compile(r"(^|\.)lora_B\.")


def _numel(p: torch.nn.Parameter) -> int:
    # bitsandbytes packs two 4-bit values in one byte; count the logical weights, not the storage.
    return p.quant_state.shape.numel() if hasattr(p, "quant_state") and p.quant_state is not None else p.numel()


def param_report(model: torch.nn.Module) -> ParamReport:
    """Total and trainable parameters, and how the trainable ones split between LoRA and the head.
    Frozen copies PEFT keeps of modules_to_save (original_module) are not counted twice."""
    total = trainable = lora = 0
    for name, p in model.named_parameters():
        if ".original_module." in name:
            continue
        n = _numel(p)
        total += n
        if p.requires_grad:
            trainable += n
            if _LORA_PARAM.search(name):
                lora += n
    return ParamReport(total=total, trainable=trainable, lora=lora, head=trainable - lora)


def check_budget(recipe: Recipe, report: ParamReport) -> None:
    if recipe.max_trainable_params is not None and report.trainable > recipe.max_trainable_params:
        raise UsageError(f"the run would train {report.trainable:,} parameters, over max_trainable_params "
                         f"{recipe.max_trainable_params:,}; lower lora_r, target fewer modules or layers, "
                         "or raise the budget")


def initial_lora(recipe: Recipe, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """For PiSSA and OLoRA (init_lora_weights), a copy of LoRA's matrices as initialised, under their saved names,
    for `convert_to_plain_lora`; None for any other initialisation."""
    from peft import get_peft_model_state_dict

    from .recipe import rewrites_base

    if not rewrites_base(recipe.init_lora_weights):
        return None
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items() if ".lora_" in k}


def convert_to_plain_lora(folder: Path, initial: dict[str, torch.Tensor]) -> None:
    """Rewrite the PiSSA/OLoRA adapter saved in `folder` as plain LoRA for the unchanged base, given its matrices
    as initialised (`initial_lora`).

    Both take LoRA's start B0 A0 out of the base weights, so the trained adapter fits only that rewritten base.
    Its change to the base is s (B A - B0 A0) = s [B | -B0] [A ; A0]: a plain LoRA adapter of rank 2r, whose alpha
    doubles (times sqrt 2 under rsLoRA) to keep the scaling s. PEFT's own conversion (save_pretrained's
    path_initial_model_for_weight_conversion) does the same but, in peft 0.21, drops the head (modules_to_save)."""
    import json

    from safetensors.torch import load_file, save_file

    from .runfolder import ADAPTER_FILES

    weights_file, config_file = Path(folder) / ADAPTER_FILES[1], Path(folder) / ADAPTER_FILES[0]
    tensors = load_file(str(weights_file))
    for key, value in tensors.items():
        if ".lora_A." in key:
            tensors[key] = torch.cat([value, initial[key].to(value)], dim=0).contiguous()
        elif ".lora_B." in key:
            tensors[key] = torch.cat([value, -initial[key].to(value)], dim=1).contiguous()
    save_file(tensors, str(weights_file), metadata={"format": "pt"})
    config = json.loads(config_file.read_text())
    config["lora_alpha"] *= 2 ** 0.5 if config.get("use_rslora") else 2
    config["r"] *= 2
    config["init_lora_weights"] = True
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))


def is_peft(model) -> bool:
    return isinstance(model, PeftModel)
