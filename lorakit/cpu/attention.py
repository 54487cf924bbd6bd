"""Attention for training on CPU: the probabilities' dropout with FastDropout's masks, and the faster SDPA kernel.

transformers' SDPA attention hands the attention probabilities' dropout to `scaled_dot_product_attention`, which
on CPU then runs its math kernel and draws one random number per probability (batch x heads x length x length of
them per layer): at 128 tokens a quarter of a LoRA step on MiniLM (`python -m bench.step_options`). `cpu_attention`
computes the same math kernel itself in training and drops the probabilities with `lorakit.cpu.dropout.fast_dropout`
(one draw per four elements). Without attention dropout SDPA picks its CPU flash kernel, whose backward is slower
than the math kernel's on short rows, so training on rows up to MATH_KERNEL_MAX_TOKENS holds SDPA to its math
kernel. Evaluation, and anything this does not cover (causal or cached attention, grouped key/value heads,
position biases), goes to transformers' own SDPA function unchanged.

`use_cpu_attention(model)` switches a model that uses SDPA to it (training does so on CPU when `fast_dropout` is
on); the attention implementation is not saved with a model, so saved folders load with SDPA as before.
"""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .dropout import fast_dropout

NAME = "lorakit_cpu"
# Up to this many tokens per row, training without attention dropout holds SDPA to its math kernel: its backward
# beats the CPU flash kernel's there (`python -m bench.step_options --lengths N`, attention dropout 0 rows).
MATH_KERNEL_MAX_TOKENS = 128


def _sdpa(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _covered(module, query, key, kwargs: dict) -> bool:
    """Plain bidirectional attention over the module's own heads: what BERT-like encoders run."""
    return (not kwargs.get("is_causal") and getattr(module, "is_causal", True) is False
            and query.shape[1] == key.shape[1] and kwargs.get("position_bias") is None
            and kwargs.get("cache") is None and kwargs.get("softcap") is None)


def cpu_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                  **kwargs):
    """transformers attention function (query, key, value: batch x heads x length x head size); returns
    (output as batch x length x heads x head size, None)."""
    if not (module.training and _covered(module, query, key, kwargs)):
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if dropout == 0:
        if query.shape[2] > MATH_KERNEL_MAX_TOKENS:
            return _sdpa(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
        with sdpa_kernel(SDPBackend.MATH):  # the backward follows the kernel the forward ran
            return _sdpa(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:  # SDPA's mask: bool (True = attend) or additive
        scores = (scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
                  if attention_mask.dtype == torch.bool else scores + attention_mask)
    probs = fast_dropout(torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype), dropout)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def register() -> None:
    """Make NAME a transformers attention implementation whose masks are built as for SDPA."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, cpu_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def use_cpu_attention(model: torch.nn.Module) -> bool:
    """Switch every config in `model` that runs SDPA attention to `cpu_attention`; True if any was."""
    register()
    switched = False
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and getattr(config, "_attn_implementation", None) == "sdpa":
            config._attn_implementation = NAME
            switched = True
    return switched
