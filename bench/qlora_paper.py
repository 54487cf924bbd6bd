"""On paper, from parameter counts: what the shipped Qwen2.5-0.5B QLoRA recipe trains and what its weights take.

    python -m bench.qlora_paper        # a second; nothing downloaded

The model is Qwen/Qwen2.5-0.5B's config written out (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate
4864, vocabulary 151,936, tied embeddings), built as `train.py --task agnews_qwen2.5_0.5b_qlora` builds it
(`lorakit.modeling.build_model`, LoRA from the recipe, the `score` head) on the meta device: exact parameter
counts, no weights. Weight memory: every linear layer outside the head in 4-bit NF4 as bitsandbytes stores it
(half a byte a weight, one 8-bit absmax per block of 64 with double quantisation, one fp32 scale per 256 of those
blocks), everything else (embeddings, norms, LoRA, the head and PEFT's frozen copy of it) in fp32 as the kit
loads it; against the same model all fp32 or all bf16.
"""

from __future__ import annotations

import sys

import torch

from lorakit import modeling
from lorakit.recipe import parse_recipe

TASK = "agnews_qwen2.5_0.5b_qlora"
QWEN25_05B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                  intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768)
NF4_BLOCK, SCALE_BLOCKS = 64, 256  # bitsandbytes' 4-bit blocksize; double quantisation's block of absmax values


def nf4_bytes(numel: int) -> float:
    """Bytes of a 4-bit NF4 weight with double quantisation: codes, 8-bit absmax per block, fp32 scale per 256."""
    blocks = numel / NF4_BLOCK
    return numel / 2 + blocks + 4 * blocks / SCALE_BLOCKS


def main() -> str:
    from transformers import AutoConfig

    resolved = parse_recipe(["--task", TASK])
    recipe = resolved.recipe
    config = AutoConfig.for_model("qwen2", **QWEN25_05B, pad_token_id=151643,
                                  num_labels=len(recipe.label_names))
    model = modeling.build_model(recipe, config, random_weights=True)
    report = modeling.param_report(model)
    head = set(modeling.head_modules(recipe, config, model))
    quantised = fp32 = 0.0
    for name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            full = f"{name}.{pname}"
            in_head = modeling.is_head_parameter(full, list(head))
            if isinstance(module, torch.nn.Linear) and pname == "weight" and ".lora_" not in full and not in_head:
                quantised += nf4_bytes(p.numel())
            else:
                fp32 += 4 * p.numel()
    every = sum(p.numel() for p in model.parameters())  # PEFT's frozen copy of the head included
    mib = 1024 ** 2
    lines = [
        f"Command: `python -m bench.qlora_paper`; recipe configs/{TASK}.yaml (r={recipe.lora_r}, "
        f"alpha={recipe.lora_alpha:g}, targets {modeling.target_modules(recipe, config)}, 4-bit: {recipe.load_in_4bit})",
        f"Qwen2.5-0.5B as a {config.num_labels}-label classifier: {report.total:,} parameters "
        f"(embeddings {config.vocab_size * config.hidden_size:,})",
        f"trainable: {report.trainable:,} ({report.percent:.3f}%): {report.lora:,} in LoRA matrices, "
        f"{report.head:,} in the score head",
        f"weights as the recipe loads them: {(quantised + fp32) / mib:,.0f} MiB "
        f"({quantised / mib:,.0f} MiB of 4-bit linear layers, {fp32 / mib:,.0f} MiB in fp32: embeddings, norms, "
        "LoRA, head)",
        f"the same model all fp32: {4 * every / mib:,.0f} MiB; all bf16: {2 * every / mib:,.0f} MiB",
        f"AdamW state and gradients of the trainable parameters (fp32): {12 * report.trainable / mib:,.1f} MiB",
    ]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    sys.exit(main() and 0)
