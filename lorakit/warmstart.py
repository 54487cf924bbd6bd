"""Warm start: a run's LoRA matrices taken from an adapter trained before (`init_adapter`) instead of fresh ones.

The LoRA paper (Hu et al. 2021, section 5.1) starts MRPC, RTE and STS-B from the MNLI-trained adapter. The
LoRA matrices always come over (same base model, target modules and rank, or a UsageError naming both sides);
the classifier only when the source was trained on the same label names (otherwise the run's new head stays);
the body's modules_to_save (e.g. BERT's pooler) only with `init_adapter_modules_to_save`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UsageError
from .modeling import HEAD_MODULES
from .recipe import Recipe
from .runfolder import ADAPTER_FILES, is_local_path, read_json, read_labels

log = logging.getLogger("lorakit")
_PREFIX = "base_model.model."


@dataclass
class WarmStart:
    """Which tensors of the source adapter go into the run's model."""

    path: Path
    keys: list[str]  # the source's keys to load
    head: bool  # the classifier comes from the source too

    def describe(self) -> str:
        lora = sum(".lora_" in k for k in self.keys)
        return (f"warm start from {str(self.path)!r}: {lora} LoRA tensors, "
                f"{'its classifier' if self.head else 'a new classifier'}"
                f"{', ' + str(len(self.keys) - lora) + ' other tensors' if len(self.keys) - lora else ''}")


def _same_base(a: str, b: str) -> bool:
    if is_local_path(a) and is_local_path(b):
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return a.rstrip("/") == b.rstrip("/")


def _lora_modules(names) -> dict[str, str]:
    """Adapted module -> 'A'/'B' key stem, from parameter or tensor names (PEFT's and adapters/' alike)."""
    out = {}
    for name in names:
        if ".lora_A." in name:
            out[name.removeprefix(_PREFIX).split(".lora_A.")[0]] = name
    return out


def _targets(modules) -> str:
    leaves = sorted({m.rsplit(".", 1)[-1] for m in modules})
    return f"{','.join(leaves) or 'nothing'} ({len(modules)} modules)"


def plan(recipe: Recipe, model: torch.nn.Module, label_names: list[str]) -> WarmStart | None:
    """Check `recipe.init_adapter` against the run's model (which may be a weightless meta copy) and decide what
    to load; None without init_adapter. Reads only the source's configs and tensor names. Raises UsageError."""
    if not recipe.init_adapter:
        return None
    from safetensors import safe_open

    from .inference import resolve_adapter

    path = resolve_adapter(recipe.init_adapter)
    if not (path / ADAPTER_FILES[0]).is_file() or not (path / ADAPTER_FILES[1]).is_file():
        raise UsageError(f"init_adapter {recipe.init_adapter!r} holds no LoRA adapter ({', '.join(ADAPTER_FILES)}); "
                         "pass the output folder of a LoRA run of train.py or its Hub id")
    config = read_json(path / ADAPTER_FILES[0], "adapter config")
    base = str(config.get("base_model_name_or_path"))
    if not _same_base(base, recipe.model_name_or_path):
        raise UsageError(f"init_adapter {recipe.init_adapter!r} was trained on base model {base!r} but the run's "
                         f"model_name_or_path is {recipe.model_name_or_path!r}; warm-start from an adapter of the "
                         "same base model")
    with safe_open(str(path / ADAPTER_FILES[1]), framework="pt") as fh:
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    source, run = _lora_modules(shapes), _lora_modules(n for n, _ in model.named_parameters())
    if set(source) != set(run):
        raise UsageError(f"init_adapter {recipe.init_adapter!r} adapts {_targets(source)} but the run adapts "
                         f"{_targets(run)}; set lora_target_modules / lora_layers as the source adapter had them")
    rank = config.get("r")
    if rank != recipe.lora_r:
        raise UsageError(f"init_adapter {recipe.init_adapter!r} has LoRA rank {rank} but the run's lora_r is "
                         f"{recipe.lora_r}; set --lora_r {rank}")
    labels = read_labels(path, required=False)
    head = labels is not None and labels.label_names == list(label_names)
    keys = []
    for key in shapes:
        module = key.removeprefix(_PREFIX).split(".")[0]
        if ".lora_" in key or (module in HEAD_MODULES and head) or \
                (module not in HEAD_MODULES and recipe.init_adapter_modules_to_save):
            keys.append(key)
    return WarmStart(path=path, keys=keys, head=head)


def init(recipe: Recipe, model: torch.nn.Module, label_names: list[str]) -> None:
    """Warm-start `model` from `recipe.init_adapter` (nothing without one): checked against the run, then loaded
    unless `model` is the weightless copy of a dry run."""
    warm = plan(recipe, model, label_names)
    if warm is not None and not any(p.is_meta for p in model.parameters()):
        load(warm, model)


def load(warm: WarmStart, model: torch.nn.Module) -> None:
    """Copy the planned tensors of the source adapter into the run's (weighted) PEFT model, in place."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors import safe_open

    # The run's own state in the saved layout, the planned tensors put over it: PEFT's loader wants every
    # modules_to_save tensor, and those not planned keep the run's fresh values.
    state = get_peft_model_state_dict(model)
    with safe_open(str(warm.path / ADAPTER_FILES[1]), framework="pt") as fh:
        for key in warm.keys:
            value = fh.get_tensor(key)
            if key not in state or state[key].shape != value.shape:
                raise UsageError(f"init_adapter {str(warm.path)!r} holds {key} {list(value.shape)}, which the run's "
                                 "model lacks or shapes otherwise; warm-start from an adapter of the same base model "
                                 "and LoRA settings")
            state[key] = value
    set_peft_model_state_dict(model, state)
    log.info(warm.describe())
