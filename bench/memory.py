"""Peak memory of LoRA training on this CPU: fp32, bf16 autocast, 8-bit and 4-bit (QLoRA) backbones.

    python -m bench.memory            # roberta-base and roberta-large shapes, random weights; ~10 minutes on 2 cores
    python -m bench.memory --tiny     # tiny shapes, seconds: exercises every path
    python -m bench.memory --qwen2    # a Qwen2-shaped decoder (Qwen2.5-0.5B at a quarter width, 4 layers)

Each (backbone, setup) runs in its own subprocess, which builds the model with the kit's own code
(`lorakit.modeling.build_model`: LoRA r=8 on query and value, the head trainable, `--load_in_8bit/4bit` as
train.py loads them) and trains it with transformers.Trainer for a few steps at batch 8 and 128 tokens (random
token ids: memory does not depend on the words). It reports its resident set size (RSS) after the model is
loaded, and the peak RSS while training: the kernel's high-water mark (VmHWM) is reset once the model is loaded,
so the peak is that of training, not of reading the checkpoint. The checkpoint is read into memory, not
memory-mapped, so that every setup's weights are its own allocations. Ratios are against LoRA fp32 on the same
backbone, measured in the same run.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# RoBERTa's own shapes (FacebookAI/roberta-base and -large configs), vocabulary included.
SHAPES = {
    "roberta-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "roberta-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}
ROBERTA = dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
               eos_token_id=2)
TINY = {"tiny-roberta": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)}
TINY_ROBERTA = dict(ROBERTA, vocab_size=1000, max_position_embeddings=130)
# Qwen2.5-0.5B's config (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864, vocabulary 151,936, tied
# embeddings) at a quarter of its width and 4 layers; the vocabulary, hence the embeddings, at full size. The pad
# token id is the end-of-text token, as the kit sets it for a decoder classifier.
QWEN2 = {"qwen2-tiny": dict(hidden_size=224, num_hidden_layers=4, num_attention_heads=14, num_key_value_heads=2,
                            intermediate_size=1216)}
QWEN2_COMMON = dict(model_type="qwen2", vocab_size=151936, max_position_embeddings=1024, tie_word_embeddings=True,
                    bos_token_id=151643, eos_token_id=151643, pad_token_id=151643)
# name: (recipe overrides, TrainingArguments bf16)
SETUPS = {
    "LoRA fp32": ({}, False),
    "LoRA bf16 autocast": ({}, True),
    "LoRA 8-bit backbone": ({"load_in_8bit": True}, True),
    "QLoRA 4-bit NF4": ({"load_in_4bit": True}, True),
}


def save_random_model(folder: Path, sizes: dict, common: dict) -> Path:
    """A randomly initialised backbone of the given shape (RoBERTa unless `common` names another model_type), as a
    model folder (no tokenizer needed)."""
    import torch
    from transformers import AutoConfig, AutoModel

    settings = {**common, **sizes}
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.for_model(settings.pop("model_type", "roberta"), **settings)).save_pretrained(
        folder)
    return folder


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(model_dir: str, setup: str, steps: int, batch: int, seq: int) -> dict:
    """In this process: build the kit's LoRA model for `setup`, train `steps` steps; RSS figures in MB."""
    import torch
    import transformers
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    from lorakit import modeling
    from lorakit.recipe import Recipe
    from lorakit.training import TRAINING_DEFAULTS

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    # Read the checkpoint into memory rather than map it (transformers' disable_mmap). Mapped, fp32 weights stay
    # file-backed pages of the checkpoint and a quantised load leaves every page it read in the RSS; read, each
    # setup's weights are its own allocations, comparable across setups.
    AutoModelForSequenceClassification.from_pretrained = functools.partial(
        AutoModelForSequenceClassification.from_pretrained, disable_mmap=True)
    overrides, bf16 = SETUPS[setup]
    imports_mb = _rss_mb("VmRSS")
    recipe = Recipe(model_name_or_path=model_dir, dataset_name="random", **overrides)
    config = modeling.load_config(recipe, ["negative", "positive"])
    model = modeling.build_model(recipe, config)
    loaded_mb = _rss_mb("VmRSS")
    generator = torch.Generator().manual_seed(0)
    rows = steps * batch
    data = Dataset.from_dict({
        "input_ids": torch.randint(3, config.vocab_size, (rows, seq), generator=generator).tolist(),
        "attention_mask": [[1] * seq] * rows,
        "labels": torch.randint(0, 2, (rows,), generator=generator).tolist()})
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, bf16=bf16,
                                 use_cpu=True, optim=TRAINING_DEFAULTS["optim"], report_to="none",
                                 save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=data)
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return {"imports_mb": imports_mb, "loaded_mb": loaded_mb, "peak_mb": _rss_mb("VmHWM"),
            "seconds_per_step": seconds / steps}


def _run_child(model_dir: Path, setup: str, steps: int, batch: int, seq: int) -> dict:
    cmd = [sys.executable, "-m", "bench.memory", "--child", str(model_dir), setup, str(steps), str(batch), str(seq)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{setup} on {model_dir.name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, a few seconds")
    parser.add_argument("--qwen2", action="store_true", help="a Qwen2-shaped decoder instead of RoBERTa")
    parser.add_argument("--steps", type=int, default=2, help="training steps per setup (default 2: the optimizer "
                        "state exists from the first)")
    parser.add_argument("--child", nargs=5, metavar=("MODEL_DIR", "SETUP", "STEPS", "BATCH", "SEQ"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        model_dir, setup, steps, batch, seq = args.child
        print(json.dumps(measure(model_dir, setup, int(steps), int(batch), int(seq))))
        return {}

    import transformers

    transformers.logging.disable_progress_bar()
    shapes, common = (QWEN2, QWEN2_COMMON) if args.qwen2 else (TINY, TINY_ROBERTA) if args.tiny else (SHAPES, ROBERTA)
    batch, seq, steps = (4, 32, 2) if args.tiny else (8, 128, args.steps)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for name, sizes in shapes.items():
            model_dir = save_random_model(Path(tmp) / name, sizes, common)
            for setup in SETUPS:
                results[f"{name} | {setup}"] = result = _run_child(model_dir, setup, steps, batch, seq)
                print(f"  {name} {setup}: loaded {result['loaded_mb']:.0f} MB, training peak "
                      f"{result['peak_mb']:.0f} MB", flush=True, file=sys.stderr)

    command = "python -m bench.memory" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    lines = [f"Command: `{command}`; batch {batch} x {seq} tokens, {steps} steps per setup, each in its own "
             "process; RSS in MB.", "",
             "| backbone | setup | RSS after loading | peak RSS while training | peak vs LoRA fp32 | s/step* | "
             "samples/s* |",
             "|---|---|---:|---:|---:|---:|---:|"]
    summary: dict[str, float] = {}
    for key, r in results.items():
        name, setup = key.split(" | ")
        ratio = r["peak_mb"] / results[f"{name} | LoRA fp32"]["peak_mb"]
        lines.append(f"| {name} | {setup} | {r['loaded_mb']:.0f} | {r['peak_mb']:.0f} | {ratio:.2f} | "
                     f"{r['seconds_per_step']:.2f} | {batch / r['seconds_per_step']:.1f} |")
        summary[f"{name} {setup}: peak RSS MB"] = r["peak_mb"]
        summary[f"{name} {setup}: peak vs fp32"] = ratio
    imports = min(r["imports_mb"] for r in results.values())
    lines += ["", f"A process that has only imported torch, transformers and the kit holds {imports:.0f} MB. "
              f"*s/step: mean of the {steps} steps, first included, on a shared machine: a rough guide only "
              f"(samples/s: {batch} rows a step over it)."]
    print("\n".join(lines), flush=True)
    return summary


if __name__ == "__main__":
    main()
