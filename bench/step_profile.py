"""Where a kit training step spends its time, and what storing the frozen linears in bf16 and FastDropout save.

    python -m bench.step_profile [--steps 30] [--batch 16] [--tokens 16]

MiniLM-L6 with PEFT LoRA r=8 on query,value (dropout 0.1), bf16 autocast, fused AdamW, as train.py runs it on an
AVX-512-BF16 CPU. Three copies of the model take turns step by step: the kit's (frozen nn.Linear layers stored
in bf16 by `lorakit.modeling.store_frozen_linears`, dropout by `lorakit.dropout.FastDropout`, the attention
probabilities' too by `lorakit.attention`), one with the frozen linears left in fp32 (autocast casts them at
every step), one with torch's own dropout and transformers' SDPA attention (`fast_dropout: false`); prints the median
step of each and its ratio to the kit's, then the share of CPU time per operator over 10 steps of the kit's copy
(torch.profiler).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

KIT = "kit (bf16 frozen linears, FastDropout, lorakit attention)"


def _model(store: bool, fast_dropout: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from bench.run import minilm_path
    from lorakit import modeling
    from lorakit.attention import use_cpu_attention
    from lorakit.dropout import use_fast_dropout

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.1,
                                             target_modules=["query", "value"]))
    if store:
        modeling.store_frozen_linears(model, torch.bfloat16)
    if fast_dropout:  # as training does on CPU with `fast_dropout` on: the attention probabilities' dropout too
        use_fast_dropout(model)
        use_cpu_attention(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)
    return model.train(), optimizer


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per copy (default 30)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=16, help="tokens per row (default 16, SST-2's lengths)")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    x = torch.randint(1000, 20000, (args.batch, args.tokens), generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 2, (args.batch,), generator=torch.Generator().manual_seed(1))

    def step(model, optimizer):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=x, attention_mask=torch.ones_like(x), labels=y).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    copies = {KIT: _model(True, True), "frozen linears fp32": _model(False, True),
              "torch's dropout and SDPA's": _model(True, False)}
    times = {name: [] for name in copies}
    for i in range(args.steps + 3):
        for name, (model, optimizer) in copies.items():
            start = time.perf_counter()
            step(model, optimizer)
            if i >= 3:  # warm-up steps build the kernels
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print(f"batch {args.batch} x {args.tokens} tokens, bf16 autocast, {torch.get_num_threads()} threads, "
          f"median of {args.steps} interleaved steps after 3 warm-up:")
    for name, ms in medians.items():
        print(f"  {name}: {ms:.1f} ms")
    ratios = {name: ms / medians[KIT] for name, ms in medians.items() if name != KIT}
    for name, ratio in ratios.items():
        print(f"  {name} / kit: {ratio:.2f}x the kit's step")

    from torch.profiler import ProfilerActivity, profile

    model, optimizer = copies[KIT]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            step(model, optimizer)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    shares = {e.key: e.self_cpu_time_total / total for e in events}
    groups = {"matmul (mm, addmm, bmm)": ("aten::mm", "aten::addmm", "aten::bmm"),
              "dtype casts (copy_)": ("aten::copy_",),
              "dropout masks (random_, ge; bernoulli_ inside attention)": ("aten::random_", "aten::ge",
                                                                           "aten::bernoulli_"),
              "elementwise mul, div (dropout's scaling among them)": ("aten::mul", "aten::mul_", "aten::div_"),
              "fused AdamW": ("aten::_fused_adamw_",)}
    print("share of CPU time over 10 steps (torch.profiler, self time):")
    grouped = {}
    for name, ops in groups.items():
        grouped[name] = sum(shares.get(op, 0.0) for op in ops)
        print(f"  {name}: {grouped[name]:.0%}")
    return {"median_ms": medians, "ratios": ratios, "shares": grouped}


if __name__ == "__main__":
    main()
