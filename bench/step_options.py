"""What the attention function, the dropout masks' arithmetic, torch.compile and the residual stream's dtype do
to a kit training step.

    python -m bench.step_options [--steps 24] [--batch 16] [--lengths 16,24,32,40] [--only OPTION ...]
                                 [--math_max_tokens N]

MiniLM-L6 with PEFT LoRA r=8 on query,value (dropout 0.1), frozen linears stored in bf16, FastDropout, the kit's
CPU attention (`lorakit.cpu.attention`), bf16 autocast, fused AdamW: the step train.py runs on an AVX-512-BF16 CPU.
Copies of it take turns step by step on batches whose length cycles through `--lengths` (the kit's
length-grouped batches, padded to multiples of 8, come in a handful of lengths; so each row here ends in 0-7
masked padding tokens). Each copy is changed in one way (`OPTIONS`): transformers' own SDPA attention (the
probabilities' dropout inside `scaled_dot_product_attention`); eager attention; `torch.compile` with dynamic
shapes, and with one static graph per length; the frozen embeddings stored in bf16 too (the residual stream
then stays bf16 between layers, so the layers' inputs need no cast); and, with the attention probabilities'
dropout set to 0, SDPA's own kernel choice (its CPU flash kernel) against the kit's (SDPA's math kernel on rows
up to `lorakit.cpu.attention.MATH_KERNEL_MAX_TOKENS`); and FastDropout's masks applied as a multiply by the bool
mask (an earlier FastDropout's arithmetic) instead of an AND of the elements' bits; and every dropout compiled by inductor
into one fused loop forward and one backward (draw, compare, scale) instead of FastDropout's kernels; and DoRA
(`use_dora`, PEFT's layer) in place of plain LoRA, which is what that recipe key costs a step. Every
copy's first pass over the lengths (kernels built, graphs compiled) is timed apart; then prints each copy's median
step and its ratio to the kit's (BENCHMARKS.md, "What was tried").
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from dataclasses import dataclass

import torch

KIT = "the kit's step"


@dataclass(frozen=True)
class Option:
    attn: str = "sdpa"
    compile: str | None = None  # "dynamic" or "static"
    bf16_embeddings: bool = False
    attention_dropout: float | None = None  # None: the backbone's own (0.1 for MiniLM)
    cpu_attention: bool = True  # lorakit.cpu.attention (only over SDPA)
    bool_multiply_dropout: bool = False  # FastDropout's masks applied by multiplying with the bool mask
    compiled_dropout: bool = False  # every dropout one inductor kernel each way (torch.compile of its arithmetic)
    dora: bool = False  # DoRA instead of plain LoRA (the recipe's use_dora)


OPTIONS = {
    KIT: Option(),
    "transformers' SDPA attention": Option(cpu_attention=False),
    "eager attention": Option(attn="eager"),
    "torch.compile(dynamic=True)": Option(compile="dynamic"),
    "torch.compile, a static graph per length": Option(compile="static"),
    "bf16 embeddings": Option(bf16_embeddings=True),
    "attention dropout 0, SDPA's choice (flash)": Option(attention_dropout=0.0, cpu_attention=False),
    "attention dropout 0, the kit's (math kernel)": Option(attention_dropout=0.0),
    "dropout masks applied as a bool multiply": Option(bool_multiply_dropout=True),
    "dropout compiled (one fused kernel each way)": Option(compiled_dropout=True),
    "DoRA (use_dora)": Option(dora=True),
}


class _BoolMultiply(torch.autograd.Function):
    """FastDropout's apply in its earlier form: x * mask * scale with the bool mask (kept for backward)."""

    @staticmethod
    def forward(ctx, x, mask, scale):
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return x.mul(mask).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad.mul(mask).mul_(ctx.scale), None, None


def _drop_forward(x, p: float, scale: float):
    keep = torch.rand_like(x, dtype=torch.float32) >= p
    return torch.where(keep, x * scale, 0), keep


def _drop_backward(grad, keep, scale: float):
    return torch.where(keep, grad * scale, 0)


_compiled = {}


class _CompiledDropout(torch.autograd.Function):
    """Dropout whose draw, compare and scale inductor fuses into one generated loop forward (and one backward),
    where FastDropout runs six kernels forward and three backward: what fusing the masks could buy."""

    @staticmethod
    def forward(ctx, x, p):
        if not _compiled:
            _compiled.update(forward=torch.compile(_drop_forward, dynamic=True),
                             backward=torch.compile(_drop_backward, dynamic=True))
        ctx.scale = 1 / (1 - p)
        out, keep = _compiled["forward"](x, p, ctx.scale)
        ctx.save_for_backward(keep)
        return out

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return _compiled["backward"](grad, keep, ctx.scale), None


def _compiled_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    return x if p == 0 else _CompiledDropout.apply(x, p)


@contextlib.contextmanager
def dropout_apply(option: Option):
    """Within this block, FastDropout (and the attention's dropout) apply masks the way `option` says."""
    from lorakit.cpu import attention, dropout

    if option.bool_multiply_dropout:
        swaps = [(dropout, "_ScaleByMask", _BoolMultiply)]
    elif option.compiled_dropout:
        swaps = [(dropout, "fast_dropout", _compiled_dropout), (attention, "fast_dropout", _compiled_dropout)]
    else:
        swaps = []
    kept = [(module, name, getattr(module, name)) for module, name, _ in swaps]
    for module, name, new in swaps:
        setattr(module, name, new)
    try:
        yield
    finally:
        for module, name, old in kept:
            setattr(module, name, old)


def _model(option: Option, model_path: str | None):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from bench.run import minilm_path
    from lorakit import modeling
    from lorakit.cpu.attention import use_cpu_attention
    from lorakit.cpu.dropout import use_fast_dropout

    torch.manual_seed(0)
    extra = {} if option.attention_dropout is None else {"attention_probs_dropout_prob": option.attention_dropout}
    model = AutoModelForSequenceClassification.from_pretrained(model_path or minilm_path(), num_labels=2,
                                                               attn_implementation=option.attn, **extra)
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.1,
                                             target_modules=["query", "value"], use_dora=option.dora))
    modeling.store_frozen_linears(model, torch.bfloat16)
    use_fast_dropout(model)
    if option.cpu_attention:
        use_cpu_attention(model)
    if option.bf16_embeddings:  # embeddings out in bf16: LayerNorm keeps its input's dtype, so the stream stays bf16
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                module.to(torch.bfloat16)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)
    model.train()
    if option.compile:
        model = torch.compile(model, dynamic=option.compile == "dynamic")
    return model, optimizer


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=24, help="timed steps per copy (default 24)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lengths", default="16,24,32,40", help="token lengths the batches cycle through")
    parser.add_argument("--model", default=None, help="model folder (default: MiniLM-L6 from its PyPI package)")
    parser.add_argument("--math_max_tokens", type=int, default=None,
                        help="override lorakit.cpu.attention.MATH_KERNEL_MAX_TOKENS for this run (to find the crossover)")
    parser.add_argument("--only", action="append", choices=list(OPTIONS), metavar="OPTION",
                        help="time only these copies (repeatable; the kit's is always timed): one of " +
                             "; ".join(OPTIONS))
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    lengths = [int(n) for n in args.lengths.split(",")]
    if args.math_max_tokens is not None:
        from lorakit.cpu import attention

        attention.MATH_KERNEL_MAX_TOKENS = args.math_max_tokens
    gen = torch.Generator().manual_seed(0)
    batches = []
    for n in lengths:
        x = torch.randint(1000, 20000, (args.batch, n), generator=gen)
        real = n - torch.randint(0, min(8, n), (args.batch,), generator=gen)  # padded up to a multiple of 8
        mask = (torch.arange(n)[None, :] < real[:, None]).long()
        batches.append((x, mask, torch.randint(0, 2, (args.batch,), generator=gen)))

    def step(name, i):
        model, optimizer = copies[name]
        x, mask, y = batches[i % len(batches)]
        with dropout_apply(OPTIONS[name]):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(input_ids=x, attention_mask=mask, labels=y).loss
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    chosen = [name for name in OPTIONS if not args.only or name == KIT or name in args.only]
    copies = {name: _model(OPTIONS[name], args.model) for name in chosen}
    warm = {}
    for name in copies:  # one pass over every length: kernels, graphs built
        start = time.perf_counter()
        for i in range(len(batches)):
            step(name, i)
        warm[name] = time.perf_counter() - start
    times = {name: [] for name in copies}
    for i in range(args.steps):
        for name in copies:
            start = time.perf_counter()
            step(name, i)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    base = medians[KIT]
    print(f"batch {args.batch}, lengths {lengths} in turn, bf16 autocast, {torch.get_num_threads()} threads, "
          f"median of {args.steps} interleaved steps after one pass over every length:")
    for name, ms in medians.items():
        print(f"  {name}: {ms:.1f} ms ({ms / base:.2f}x the kit's step); first pass {warm[name]:.1f} s")
    return {"median_ms": medians, "first_pass_s": warm}


if __name__ == "__main__":
    main()
