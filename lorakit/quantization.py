"""Quantised backbones (QLoRA): the frozen backbone in 4-bit NF4 or 8-bit with bitsandbytes, LoRA on top.

`--load_in_4bit` follows the QLoRA paper (Dettmers et al. 2023): NF4 weights, double quantisation of the
scales, matmuls in bf16 where the device has it. `--load_in_8bit` is LLM.int8(). Both run on GPUs and, with
the pinned bitsandbytes 0.50, on x86 CPUs. The classification head and any pooler are never quantised: PEFT
trains them as full-precision copies (modules_to_save), which a bitsandbytes layer cannot be.

Merging is done by dequantising (lorakit.inference): the backbone is loaded quantised exactly as in training,
then its weights are expanded back to fp32, and LoRA is folded into those. The adapter was fitted to the
rounded weights: folding it into the original unrounded ones would predict differently from what was
evaluated, and merging into the quantised layers themselves (PEFT re-quantises the sum) would lose every part
of the low-rank update smaller than a quantisation step.
"""

from __future__ import annotations

import importlib.util

import torch
from transformers import BitsAndBytesConfig, PretrainedConfig

from . import hardware
from .errors import UsageError
from .recipe import Recipe

# Modules bitsandbytes must leave in full precision: the heads PEFT trains for sequence classification
# (`classifier`, `score`; DistilBERT's `pre_classifier`) and every pooler (DeBERTa's is trained with the
# head, BERT's is pretrained and small); `quantized_load_kwargs` adds whatever else the model's head is made of
# (modeling.classifier_head). Patterns follow transformers' llm_int8_skip_modules matching: a prefix ending at a
# module boundary, or a regular expression.
FULL_PRECISION_MODULES = ["classifier", "pre_classifier", "score", r".*pooler"]


def compute_dtype() -> torch.dtype:
    """bf16 where the device multiplies it natively (Ampere+ GPUs, AVX-512-BF16/AMX CPUs), else fp32."""
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if hardware.cpu_has_bf16() else torch.float32


def _device_map() -> dict:
    if torch.cuda.is_available():
        from accelerate import PartialState

        # One whole copy per process on its own GPU (DDP); without it every rank would load onto cuda:0.
        return {"": PartialState().local_process_index}
    return {"": "cpu"}


def bnb_config(bits: int, keep: list[str] | None = None) -> BitsAndBytesConfig:
    """The kit's bitsandbytes settings: QLoRA's NF4 with double quantisation for 4 bits, LLM.int8() for 8; the
    head and poolers (and the modules named in `keep`) stay full precision."""
    skip = list(dict.fromkeys([*FULL_PRECISION_MODULES, *(keep or [])]))
    if bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype(), llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def quantization_kwargs(recipe: Recipe, config: PretrainedConfig) -> dict:
    """`from_pretrained` kwargs that load the backbone quantised as the recipe asks (4-bit NF4 or 8-bit)."""
    flag = "--load_in_4bit" if recipe.load_in_4bit else "--load_in_8bit"
    if recipe.method != "lora":
        raise UsageError(f"{flag} freezes the backbone as quantised weights, which method {recipe.method!r} "
                         f"would train; use --method lora or drop {flag}")
    return quantized_load_kwargs(4 if recipe.load_in_4bit else 8, config)


def quantized_load_kwargs(bits: int, config: PretrainedConfig | None = None) -> dict:
    """`from_pretrained` kwargs for the kit's `bits`-bit backbone, on this process's device; with `config`, the
    head of that classifier (modeling.classifier_head) stays full precision whatever its names."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UsageError(f"a {bits}-bit backbone needs bitsandbytes; pip install -r requirements.txt")
    keep = None
    if config is not None:
        from transformers import AutoModelForSequenceClassification

        from .modeling import classifier_head

        with torch.device("meta"):
            keep = classifier_head(AutoModelForSequenceClassification.from_config(config))
    return {"quantization_config": bnb_config(bits, keep), "device_map": _device_map()}


def _autocast_output(module, args, output):
    """Under autocast, return what nn.Linear would: the autocast dtype (bitsandbytes returns the input's dtype).
    Mixed, the two break code that takes one tensor's dtype for another: DeBERTa fills bf16 attention scores
    with the float32 query's minimum, which overflows."""
    device = output.device.type
    return output.to(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else None


def _restore_int8_scales(module, args):
    """Give an 8-bit weight back the scales bitsandbytes moved to the layer's state, if it lost them.

    At its first forward a Linear8bitLt moves the weight's int8 codes and scales (CB, SCB) into `module.state`.
    On a CPU, PEFT 0.21's dequantize_module_weight (DoRA calls it at every step, in both LoRA layers) re-creates
    the weight with `.to("cpu")`, which sets CB again but not SCB; the next forward would then copy SCB=None into
    the state and fail ("'NoneType' object has no attribute 'unsqueeze'"). The codes are unchanged, so the
    state's scales are still theirs."""
    weight = module.weight
    if getattr(weight, "CB", None) is not None and weight.SCB is None and module.state.SCB is not None:
        weight.SCB = module.state.SCB


def prepare_quantized(model: torch.nn.Module) -> torch.nn.Module:
    """The quantised backbone made ready for LoRA: every weight frozen and any half-precision weight outside
    bitsandbytes upcast to fp32 (PEFT's prepare_model_for_kbit_training); the quantised layers return the
    autocast dtype under autocast, as nn.Linear does, 4-bit layers keep their trainable kernel on CPUs and 8-bit
    layers their scales (DoRA on a CPU)."""
    import bitsandbytes as bnb
    from peft import prepare_model_for_kbit_training

    # Gradient checkpointing stays a recipe choice (activation_checkpointing), not forced here. The embeddings'
    # output requires grad, as PEFT arranges for unquantised models itself: with reentrant checkpointing
    # (activation_checkpointing_kwargs use_reentrant: true) LoRA inside a checkpointed layer gets no gradient
    # otherwise, since nothing entering the layer does.
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model.enable_input_require_grads()
    for module in model.modules():
        if isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
            module.register_forward_hook(_autocast_output)
        if isinstance(module, bnb.nn.Linear8bitLt):
            module.register_forward_pre_hook(_restore_int8_scales)
        if isinstance(module, bnb.nn.Linear4bit):
            # On AVX-512-BF16 CPUs bitsandbytes repacks 4-bit weights in place for an inference kernel the first
            # time a layer runs in eval mode without gradients. That kernel has no backward (training after an
            # evaluation fails) and the repacking rounds the scales to bf16, changing the frozen base under the
            # adapter.
            module.support_avx512bf16_for_cpu = False
    return model
