"""How much of the AG News training peak is the C allocator's, not the model's.

    python -m bench.allocator [--rounds 2] [--samples 1024]

Runs the kit's AG News training phase (`bench.training --pipeline kit`, MiniLM-L6, 2 epochs) in fresh processes,
taking turns, with glibc malloc as is and with its mmap threshold fixed at 128 KB (`MALLOC_MMAP_THRESHOLD_`).
By default glibc raises that threshold to the size of the largest block freed (up to 32 MB), after which every
activation tensor comes from the heap, where blocks of a dozen shapes (length-grouped batches) fragment it; with
the threshold fixed, each large tensor is its own mapping, returned to the kernel when freed. The difference in
peak RSS is memory the heap holds but training does not use; the difference in samples/s is what the page faults
of fresh mappings cost. Prints both, medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.run import REPO, _env, minilm_path

SETTINGS = {"glibc default": {}, "mmap threshold 128 KB": {"MALLOC_MMAP_THRESHOLD_": "131072"}}


def measure(model: str, samples: int, eval_samples: int, env: dict, out: Path) -> dict:
    cmd = [sys.executable, "-m", "bench.training", "--pipeline", "kit", "--model", model, "--workload", "agnews",
           "--samples", str(samples), "--eval_samples", str(eval_samples), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env={**_env(), **env}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench.training failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1024, help="AG News training rows (default 1024)")
    parser.add_argument("--eval_samples", type=int, default=512)
    parser.add_argument("--model", default=None, help="model folder (default: MiniLM-L6 from the PyPI package)")
    args = parser.parse_args(argv)
    model = args.model or minilm_path()
    results: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, env in SETTINGS.items():
                r = measure(model, args.samples, args.eval_samples, env, Path(tmp) / f"{round_}-{len(results[name])}.json")
                results[name].append(r)
                print(f"  round {round_ + 1}, {name}: {r['samples_per_s']:.1f} samples/s, peak RSS "
                      f"{r['peak_rss_mb']:.0f} MB", flush=True, file=sys.stderr)
    summary = {name: {"samples_per_s": statistics.median(r["samples_per_s"] for r in rs),
                      "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs)} for name, rs in results.items()}
    base = summary["glibc default"]
    print(f"kit AG News training ({args.samples} rows, batch {results['glibc default'][0]['batch']}, "
          f"{results['glibc default'][0]['precision']}), {Path(model).name}, median of {args.rounds} rounds:")
    print("| malloc | peak RSS MB | samples/s | peak vs default | speed vs default |")
    print("|---|---:|---:|---:|---:|")
    for name, s in summary.items():
        print(f"| {name} | {s['peak_rss_mb']:,.0f} | {s['samples_per_s']:.1f} | "
              f"{s['peak_rss_mb'] / base['peak_rss_mb']:.2f} | {s['samples_per_s'] / base['samples_per_s']:.2f} |")
    return summary


if __name__ == "__main__":
    main()
