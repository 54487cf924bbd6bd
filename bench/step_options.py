"""What torch.compile and the attention kernel do to a kit training step (BENCHMARKS.md, "What was tried").

    python -m bench.step_options [--steps 24] [--batch 16] [--lengths 16,24,32,40]

MiniLM-L6 with PEFT LoRA r=8 on query,value (dropout 0.1), frozen linears stored in bf16, bf16 autocast, fused
AdamW: the step train.py runs on an AVX-512-BF16 CPU. Three copies take turns step by step on batches whose
length cycles through `--lengths` (the kit's length-grouped batches, padded to multiples of 8, come in a handful
of lengths): SDPA attention (transformers' default for BERT, the kit's), eager attention, and SDPA under
`torch.compile(dynamic=True)`, and SDPA with the frozen embeddings stored in bf16 too (the residual stream then
stays bf16 between layers instead of fp32, so the layers' inputs need no cast). The compiled copy's first pass over every length (compilation) is timed apart;
then prints each copy's median step and its ratio to the default.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _model(attn: str, compiled: bool, model_path: str | None, bf16_stream: bool = False):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from bench.run import minilm_path
    from lorakit import modeling

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_path or minilm_path(), num_labels=2,
                                                               attn_implementation=attn)
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.1,
                                             target_modules=["query", "value"]))
    modeling.store_frozen_linears(model, torch.bfloat16)
    if bf16_stream:  # embeddings out in bf16: LayerNorm keeps its input's dtype, so the residual stream stays bf16
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                module.to(torch.bfloat16)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)
    model.train()
    return (torch.compile(model, dynamic=True) if compiled else model), optimizer


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=24, help="timed steps per copy (default 24)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lengths", default="16,24,32,40", help="token lengths the batches cycle through")
    parser.add_argument("--model", default=None, help="model folder (default: MiniLM-L6 from its PyPI package)")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    lengths = [int(n) for n in args.lengths.split(",")]
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randint(1000, 20000, (args.batch, n), generator=gen), torch.randint(0, 2, (args.batch,),
                                                                                       generator=gen))
               for n in lengths]

    def step(model, optimizer, i):
        x, y = batches[i % len(batches)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=x, attention_mask=torch.ones_like(x), labels=y).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    copies = {"sdpa (default)": _model("sdpa", False, args.model), "eager attention": _model("eager", False, args.model),
              "sdpa + torch.compile": _model("sdpa", True, args.model),
              "sdpa + bf16 embeddings": _model("sdpa", False, args.model, bf16_stream=True)}
    warm = {}
    for name, (model, optimizer) in copies.items():  # one pass over every length: kernels built, graphs compiled
        start = time.perf_counter()
        for i in range(len(batches)):
            step(model, optimizer, i)
        warm[name] = time.perf_counter() - start
    times = {name: [] for name in copies}
    for i in range(args.steps):
        for name, (model, optimizer) in copies.items():
            start = time.perf_counter()
            step(model, optimizer, i)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    base = medians["sdpa (default)"]
    print(f"batch {args.batch}, lengths {lengths} in turn, bf16 autocast, {torch.get_num_threads()} threads, "
          f"median of {args.steps} interleaved steps after one pass over every length:")
    for name, ms in medians.items():
        print(f"  {name}: {ms:.1f} ms ({ms / base:.2f}x the default's step); first pass {warm[name]:.1f} s")
    return {"median_ms": medians, "first_pass_s": warm}


if __name__ == "__main__":
    main()
