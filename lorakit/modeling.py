"""Model: a sequence classifier with LoRA (PEFT's layer or ours) or fully trainable, and its parameter report."""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig

from .errors import UsageError
from .recipe import Recipe
from .runfolder import config_labels

# Attention projections the LoRA paper adapts (query and value), by the names each architecture uses.
DEFAULT_TARGETS = {
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "bert": ["query", "value"],
    "deberta-v2": ["query_proj", "value_proj"],
    "deberta": ["in_proj"],
    "distilbert": ["q_lin", "v_lin"],
}
# Modules beside the classifier that train in full with it, so that every architecture trains the same head:
# RoBERTa's classification head is dense + tanh + out_proj, all in `classifier`; BERT, DeBERTa and DistilBERT
# keep that dense layer outside it (pooler, pre_classifier). DeBERTa's ContextPooler is not in the pretrained
# checkpoint at all (PEFT's troubleshooting guide calls this out), and sentence-embedding checkpoints such as
# all-MiniLM-L6-v2 ship a BERT pooler their mean-pooling training never used. Frozen, it cost LoRA 12 points
# of MRPC accuracy against full fine-tuning; trained, 0.5 (EXPERIMENTS.md). `lora_modules_to_save` overrides.
EXTRA_TRAINABLE = {"bert": ["pooler"], "deberta-v2": ["pooler"], "deberta": ["pooler"],
                   "distilbert": ["pre_classifier"]}


def load_config(recipe: Recipe, label_names: list[str]) -> PretrainedConfig:
    """The backbone's config with the task's labels, from a Hub id or a local folder."""
    path = recipe.model_name_or_path
    if path.startswith((".", "/", "~")) and not Path(path).expanduser().is_dir():
        raise UsageError(f"model folder {path!r} not found; pass an existing folder or a Hub model id "
                         "with --model_name_or_path")
    try:
        return AutoConfig.from_pretrained(path, **config_labels(label_names, recipe.problem_type),
                                          trust_remote_code=recipe.trust_remote_code)
    except OSError as err:
        raise UsageError(f"model {path!r} could not be loaded ({str(err).splitlines()[0]}); pass a local "
                         "folder or a Hub id you can reach with --model_name_or_path") from None


def load_tokenizer(recipe: Recipe):
    try:
        tokenizer = AutoTokenizer.from_pretrained(recipe.model_name_or_path,
                                                  trust_remote_code=recipe.trust_remote_code)
    except OSError as err:
        raise UsageError(f"tokenizer of {recipe.model_name_or_path!r} could not be loaded "
                         f"({str(err).splitlines()[0]}); the model folder needs its tokenizer files") from None
    if tokenizer.pad_token is None:  # decoder-only backbones have none; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_seq_length(recipe: Recipe, config: PretrainedConfig) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    # RoBERTa reserves two positions for the padding offset.
    usable = limit - 2 if limit and config.model_type in ("roberta", "xlm-roberta") else limit
    if usable and recipe.max_seq_length > usable:
        raise UsageError(f"max_seq_length {recipe.max_seq_length} exceeds the model's limit of {usable} tokens; "
                         f"set --max_seq_length {usable} or less")


def target_modules(recipe: Recipe, config: PretrainedConfig) -> list[str]:
    if recipe.lora_target_modules:
        return list(recipe.lora_target_modules)
    if config.model_type not in DEFAULT_TARGETS:
        raise UsageError(f"no default LoRA target modules for model type {config.model_type!r}; "
                         "set --lora_target_modules, e.g. q_proj,v_proj")
    return DEFAULT_TARGETS[config.model_type]


def modules_to_save(recipe: Recipe, config: PretrainedConfig) -> list[str]:
    """Modules trained in full beside the classifier (which PEFT's SEQ_CLS task always trains)."""
    if recipe.lora_modules_to_save is not None:
        return list(recipe.lora_modules_to_save)
    return list(EXTRA_TRAINABLE.get(config.model_type, []))


# The classification head's module names (AutoModelForSequenceClassification's `classifier`; `score` for
# decoder backbones); with modules_to_save they make up what `head_learning_rate` applies to.
HEAD_MODULES = ("classifier", "score")


def head_modules(recipe: Recipe, config: PretrainedConfig) -> list[str]:
    return [*HEAD_MODULES, *modules_to_save(recipe, config)]


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
    modules = head_modules(recipe, config)
    count = sum(_numel(p) for n, p in model.named_parameters() if p.requires_grad and is_head_parameter(n, modules))
    if not count:
        raise UsageError(f"head_learning_rate is set but no trainable parameter belongs to the head modules "
                         f"{modules}; name the head with lora_modules_to_save or leave head_learning_rate unset")
    return count


def lora_config(recipe: Recipe, config: PretrainedConfig) -> LoraConfig:
    """PEFT's LoraConfig for the recipe; task SEQ_CLS keeps the classification head trainable and saved."""
    cfg = LoraConfig(
        task_type="SEQ_CLS", r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
        use_dora=recipe.use_dora, target_modules=target_modules(recipe, config), layers_to_transform=recipe.lora_layers,
        # A copy: PEFT appends the SEQ_CLS heads to this list in place.
        modules_to_save=modules_to_save(recipe, config) or None)
    if recipe.lora_impl == "scratch":
        from . import adapters

        adapters.register(cfg)
    return cfg


def _num_layers(config: PretrainedConfig) -> int | None:
    return getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)


def check_lora_targets(recipe: Recipe, model: torch.nn.Module, config: PretrainedConfig) -> None:
    """A target that matches no Linear, or a layer index out of range, is an error before any training."""
    targets = target_modules(recipe, config)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    for target in targets:
        if not any(n == target or n.endswith("." + target) for n in names):
            leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
            raise UsageError(f"LoRA target module {target!r} matches nothing in {config.model_type}; "
                             f"choose from {', '.join(leaves)}")
    modules = [n for n, _ in model.named_modules()]
    for extra in modules_to_save(recipe, config):
        if not any(n == extra or n.endswith("." + extra) for n in modules):
            raise UsageError(f"lora_modules_to_save {extra!r} matches no module of {config.model_type}; name a "
                             "module the model has (e.g. pooler) or leave the key unset")
    layers = _num_layers(config)
    if recipe.lora_layers and layers is not None:
        bad = [i for i in recipe.lora_layers if not 0 <= i < layers]
        if bad:
            raise UsageError(f"lora_layers {bad} out of range: the model has layers 0-{layers - 1}; "
                             f"pass e.g. --lora_layers 0-{layers - 1}")


def apply_method(recipe: Recipe, model: torch.nn.Module, config: PretrainedConfig) -> torch.nn.Module:
    """Wrap the backbone with LoRA (or leave it fully trainable for method=full)."""
    if recipe.method == "full":
        return model
    check_lora_targets(recipe, model, config)
    return get_peft_model(model, lora_config(recipe, config))


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


def is_peft(model) -> bool:
    return isinstance(model, PeftModel)
