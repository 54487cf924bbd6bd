"""How much of the AG News training peak is the C allocator's, not the model's, and what mimalloc changes.

    python -m bench.allocator [--rounds 2] [--samples 1024] [--workload agnews|sst2]

Runs the kit's AG News (or SST-2) training phase (`bench.training --pipeline kit`, MiniLM-L6, 2 epochs) in fresh
processes, taking turns, on four allocators:
- glibc as is. It raises its mmap threshold to the size of the largest block freed (up to 32 MB), after which
  every activation tensor comes from the heap, where blocks of a dozen shapes (length-grouped batches) fragment it;
- glibc with its mmap threshold fixed at 128 KB (`MALLOC_MMAP_THRESHOLD_`): each large tensor is its own mapping,
  returned to the kernel when freed, so the peak is close to what training holds live, and the speed lost is what
  faulting in and zeroing fresh pages at every step costs;
- mimalloc (the cmeel-mimalloc wheel, `LD_PRELOAD`) with its default purging of freed pages after 10 ms;
- mimalloc as train.py runs it (`lorakit.allocator.preload_env()`: purging off): the kit's default.
Prints peak RSS and samples/s, medians over the rounds, against glibc as is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.run import REPO, _env, minilm_path
from lorakit.cpu import allocator

SYSTEM = {allocator.ENV: "system"}  # bench.training never re-executes itself; this only keeps LD_PRELOAD clean
KIT = "mimalloc, purge off (LORAKIT_ALLOCATOR=mimalloc)"


def settings() -> dict[str, dict]:
    """Name -> environment of each allocator compared; mimalloc's rows need the cmeel-mimalloc wheel."""
    out = {"glibc default": SYSTEM, "glibc, mmap threshold 128 KB": {**SYSTEM, "MALLOC_MMAP_THRESHOLD_": "131072"}}
    kit = allocator.preload_env({**{k: v for k, v in os.environ.items() if k != allocator.PRELOADED},
                                 allocator.ENV: "mimalloc"})
    if kit:
        out["mimalloc, default purge (10 ms)"] = {**kit, "MIMALLOC_PURGE_DELAY": "10"}
        out[KIT] = kit
    return out


def measure(model: str, workload: str, samples: int, eval_samples: int, env: dict, out: Path) -> dict:
    cmd = [sys.executable, "-m", "bench.training", "--pipeline", "kit", "--model", model, "--workload", workload,
           "--samples", str(samples), "--eval_samples", str(eval_samples), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env={**_env(), **env}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench.training failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workload", choices=["agnews", "sst2"], default="agnews")
    parser.add_argument("--samples", type=int, default=1024, help="training rows (default 1024)")
    parser.add_argument("--eval_samples", type=int, default=512)
    parser.add_argument("--model", default=None, help="model folder (default: MiniLM-L6 from the PyPI package)")
    args = parser.parse_args(argv)
    model = args.model or minilm_path()
    compared = settings()
    if KIT not in compared:
        print("cmeel-mimalloc is not installed (pip install -r requirements.txt): comparing glibc settings only",
              file=sys.stderr)
    results: dict[str, list[dict]] = {name: [] for name in compared}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, env in compared.items():
                out = Path(tmp) / f"{round_}-{len(results[name])}.json"
                r = measure(model, args.workload, args.samples, args.eval_samples, env, out)
                results[name].append(r)
                print(f"  round {round_ + 1}, {name}: {r['samples_per_s']:.1f} samples/s, peak RSS "
                      f"{r['peak_rss_mb']:.0f} MB", flush=True, file=sys.stderr)
    summary = {name: {"samples_per_s": statistics.median(r["samples_per_s"] for r in rs),
                      "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
                      "allocator": rs[0]["allocator"]} for name, rs in results.items()}
    base = summary["glibc default"]
    print(f"kit {args.workload} training ({args.samples} rows, batch {results['glibc default'][0]['batch']}, "
          f"{results['glibc default'][0]['precision']}), {Path(model).name}, median of {args.rounds} rounds:")
    print("| malloc | peak RSS MB | samples/s | peak vs default | speed vs default |")
    print("|---|---:|---:|---:|---:|")
    for name, s in summary.items():
        print(f"| {name} | {s['peak_rss_mb']:,.0f} | {s['samples_per_s']:.1f} | "
              f"{s['peak_rss_mb'] / base['peak_rss_mb']:.2f} | {s['samples_per_s'] / base['samples_per_s']:.2f} |")
    return summary


if __name__ == "__main__":
    main()
