"""Mean and spread over seeds of a sweep that swept `seed` with other keys, and LoRA minus full per seed.

    python experiments/seed_spread.py RUNS/seeds_sst2 OUT.md [RUNS/other_sweep ...] [--plot OUT.png]

Reads the sweep's results.csv (written by `train.py --sweep seed=... --sweep method:learning_rate=...`), groups
the runs by every swept key except seed, and writes (and prints) a Markdown table of the final headline metric:
mean, sample standard deviation, min and max over seeds. With a `method` column holding lora and full, it adds
the per-seed difference LoRA - full in points (the seed fixes the data order, the head's initialisation and the
dropout masks, so runs with the same seed are paired), with the standard error of its mean and a 95% interval
(Student's t, n - 1 degrees of freedom). Further sweep folders (LoRA variants at the same seeds)
join the table under their folder's name and are paired with the first folder's full fine-tuning runs.
`--plot` also draws those differences: each LoRA setting's per-seed gaps, mean and 95% interval, against the
headline's target of 1 point.
"""

from __future__ import annotations

import csv
import re
import statistics
import sys
from pathlib import Path


# Student's t, two-sided 95% (the 0.975 quantile), by degrees of freedom; the normal's 1.960 beyond 30.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
         29: 2.045, 30: 2.042}


def interval(diffs: list[float]) -> tuple[float, float] | None:
    """The 95% interval of the mean of per-seed differences (Student's t), None for fewer than two."""
    if len(diffs) < 2:
        return None
    mean = statistics.fmean(diffs)
    half = T_975.get(len(diffs) - 1, 1.960) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return mean - half, mean + half


def paired_columns(diffs: list[float]) -> str:
    """Mean, sd, standard error and 95% interval of per-seed differences, as Markdown cells."""
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return f"{mean:+.2f} | nan | nan | nan"
    sd = statistics.stdev(diffs)
    low, high = interval(diffs)
    return f"{mean:+.2f} | {sd:.2f} | {sd / len(diffs) ** 0.5:.2f} | {low:+.1f} to {high:+.1f}"


def read_groups(folder: Path, label: str | None, groups: dict[tuple, dict[str, float]]) -> str:
    """Add the folder's runs to `groups` (keyed by every swept key but seed, after `label` if given); returns the
    headline metric."""
    with open(folder / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns = list(rows[0])
    swept = columns[1:columns.index("status")]
    if "seed" not in swept:
        raise SystemExit(f"{folder}: the sweep did not sweep seed")
    metric = next(c[len("best_eval_"):] for c in columns if c.startswith("best_eval_"))
    for row in rows:
        if not row.get(f"eval_{metric}"):
            raise SystemExit(f"{folder}: run {row['setting']} has no final metric; finish the sweep first")
        key = (("sweep", label),) if label else ()
        key += tuple((k, row[k]) for k in swept if k != "seed")
        groups.setdefault(key, {})[row["seed"]] = float(row[f"eval_{metric}"])
    return metric


def main(argv: list[str]) -> int:
    plot = None
    if "--plot" in argv:
        at = argv.index("--plot")
        if at + 1 >= len(argv):
            raise SystemExit("--plot needs a file name: --plot OUT.png")
        plot, argv = Path(argv[at + 1]), argv[:at] + argv[at + 2:]
    folder, out, more = Path(argv[0]), Path(argv[1]), [Path(a) for a in argv[2:]]
    groups: dict[tuple, dict[str, float]] = {}
    metric = read_groups(folder, None, groups)
    for extra in more:
        if read_groups(extra, extra.name, groups) != metric:
            raise SystemExit(f"{extra}: its headline metric differs from {folder}'s")
    lines = [f"| setting | seeds | final {metric}, mean | sd | min | max |", "|---|---:|---:|---:|---:|---:|"]
    for key, by_seed in groups.items():
        v = list(by_seed.values())
        lines.append(f"| {', '.join(f'{k}={x}' for k, x in key)} | {len(v)} | {statistics.fmean(v):.4f} | "
                     f"{statistics.stdev(v) if len(v) > 1 else float('nan'):.4f} | {min(v):.4f} | {max(v):.4f} |")
    full = [g for k, g in groups.items() if ("method", "full") in k]
    paired: dict[str, list[float]] = {}
    if plot and len(full) != 1:
        raise SystemExit(f"--plot draws LoRA - full per seed, but {folder} has {len(full)} full fine-tuning settings")
    if len(full) == 1:
        lines += ["", "| LoRA setting | paired seeds | LoRA - full (pts), mean | sd | s.e. | 95% interval | per seed |",
                  "|---|---:|---:|---:|---:|---|---|"]
        for key, by_seed in groups.items():
            if ("method", "full") in key:
                continue
            seeds = sorted(set(by_seed) & set(full[0]), key=int)
            diffs = [100 * (by_seed[s] - full[0][s]) for s in seeds]
            setting = ", ".join(f"{k}={x}" for k, x in key)
            paired[setting] = diffs
            lines.append(f"| {setting} | {len(diffs)} | {paired_columns(diffs)} | "
                         f"{' '.join(f'{d:+.1f}' for d in diffs)} |")
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)
    if plot:
        from lorakit.plots import plot_paired_gaps

        plot.parent.mkdir(parents=True, exist_ok=True)
        # "sweep=rte_dora, use_dora=true" -> "rte_dora: use_dora=true"; the folder's name says what it varied.
        labels = [re.sub(r"^sweep=([^,]+)(, )?", lambda m: m[1] + (": " if m[2] else ""), k) for k in paired]
        plot_paired_gaps(labels, list(paired.values()), [interval(d) for d in paired.values()], plot,
                         title=f"LoRA - full fine-tuning, final {metric}, paired by seed",
                         xlabel=f"LoRA - full, final {metric} (points)")
        print(f"wrote {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
