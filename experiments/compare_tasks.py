"""Merge the per-task `method:learning_rate=lora:...,full:...` sweeps into one LoRA-against-full table and chart.

    python experiments/compare_tasks.py --lora_lr 1e-3 [--column PREFIX=LABEL ...] RUNS OUT_DIR sst2 cola mrpc rte agnews

Reads RUNS/lora_vs_full_<task>/results.csv (written by `train.py --sweep`; `--lora_lr` picks the LoRA row when
the sweep trained LoRA at several learning rates), writes OUT_DIR/summary.md,
OUT_DIR/summary.csv and OUT_DIR/lora_vs_full.png. A point is 0.01 of a metric in [0, 1]. The majority-class
accuracy of each eval set (read with the runs' own recipe.yaml) shows whether a run learnt anything: a gap
between two runs that both sit at the majority class does not test LoRA against full fine-tuning.
Each `--column PREFIX=LABEL` adds another LoRA variant from RUNS/PREFIX_<task>/results.csv (one run per task),
e.g. `head_only` (the classifier alone trained), as a column of the table (with its gap to full fine-tuning)
and a bar of the chart.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from collections import Counter
from pathlib import Path

import yaml

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lorakit.data import load_task_data  # noqa: E402
from lorakit.recipe import Recipe  # noqa: E402

LABELS = {"accuracy": "acc", "f1": "F1", "f1_macro": "macro-F1", "matthews_correlation": "MCC"}


def read(runs: Path, task: str, lora_lr: str | None) -> dict[str, dict]:
    """The task's LoRA row (at `lora_lr` if given) and its full fine-tuning row."""
    with open(runs / f"lora_vs_full_{task}" / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    wanted = {"full": None, "lora": None if lora_lr is None else float(lora_lr)}
    picked = {}
    for row in rows:
        lr = wanted.get(row["method"], "skip")
        if lr == "skip" or (lr is not None and float(row["learning_rate"]) != lr):
            continue
        if row["method"] in picked:
            raise SystemExit(f"{task}: several {row['method']} rows; pass --lora_lr to pick one")
        picked[row["method"]] = row
    missing = set(wanted) - set(picked)
    if missing:
        raise SystemExit(f"{task}: no {' or '.join(sorted(missing))} row at the asked learning rate")
    return picked


def variant_final(runs: Path, prefix: str, task: str, metric: str) -> float:
    with open(runs / f"{prefix}_{task}" / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) != 1:
        raise SystemExit(f"{task}: expected one run in {prefix}_{task}, found {len(rows)}")
    return float(rows[0][f"eval_{metric}"])


def majority_accuracy(run_folder: Path) -> float:
    """Accuracy of always predicting the most common label of the eval rows the run was evaluated on."""
    saved = yaml.safe_load((run_folder / "recipe.yaml").read_text())
    recipe = Recipe(**{f.name: saved[f.name] for f in dataclasses.fields(Recipe) if f.name in saved})
    labels = load_task_data(recipe).eval["labels"]
    return max(Counter(labels).values()) / len(labels)


def summarize(task: str, rows: dict[str, dict], majority: float) -> dict:
    lora, full = rows["lora"], rows["full"]
    headline = next(k[len("best_eval_"):] for k in lora if k.startswith("best_eval_"))
    others = [k[len("eval_"):] for k in lora if k.startswith("eval_") and k != f"eval_{headline}"]

    def value(row, key):
        return float(row[key]) if row.get(key) else float("nan")

    out = {"task": task, "metric": headline, "lora_lr": lora["learning_rate"], "full_lr": full["learning_rate"],
           "lora_trainable_percent": float(lora["trainable_percent"]),
           "lora_best": value(lora, f"best_eval_{headline}"), "full_best": value(full, f"best_eval_{headline}"),
           "lora_final": value(lora, f"eval_{headline}"), "full_final": value(full, f"eval_{headline}"),
           "lora_s_per_epoch": value(lora, "s_per_epoch"), "full_s_per_epoch": value(full, "s_per_epoch")}
    for other in (o for o in others if o != "accuracy"):
        out[f"lora_final_{other}"] = value(lora, f"eval_{other}")
        out[f"full_final_{other}"] = value(full, f"eval_{other}")
    out["majority_accuracy"] = majority
    out["lora_accuracy"] = value(lora, "eval_accuracy")
    out["full_accuracy"] = value(full, "eval_accuracy")
    out["gap_final_points"] = 100 * (out["lora_final"] - out["full_final"])
    out["gap_best_points"] = 100 * (out["lora_best"] - out["full_best"])
    return out


def verdict(s: dict) -> str:
    """Within 1 point on the final metric, unless neither run beat the majority class by a point."""
    if max(s["lora_accuracy"], s["full_accuracy"]) <= s["majority_accuracy"] + 0.01:
        return "untested: both at the majority class"
    return "yes" if s["gap_final_points"] >= -1.0 else "no"


def markdown(summaries: list[dict], columns: list[tuple[str, str]] = ()) -> str:
    """The table; `columns` are (prefix, label) of further LoRA variants, each summary holding <prefix>_final and
    <prefix>_gap_points."""
    header = ["task", "metric", "LoRA final", "full final", "gap (pts)", "LoRA best", "full best", "gap (pts)",
              "other metrics, final (LoRA / full)", "majority-class acc", "LoRA % trained", "s/epoch LoRA / full",
              "LoRA within 1 pt (final)"]
    header[5:5] = [h for _, label in columns for h in (label, "gap (pts)")]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 3) + ["---"]) + "|"]
    for s in summaries:
        others = ", ".join(f"{LABELS.get(k[len('lora_final_'):], k)} {s[k]:.4f} / {s['full_' + k[len('lora_'):]]:.4f}"
                           for k in s if k.startswith("lora_final_"))
        lines.append("| " + " | ".join([
            s["task"], LABELS.get(s["metric"], s["metric"]), f"{s['lora_final']:.4f}", f"{s['full_final']:.4f}",
            f"{s['gap_final_points']:+.1f}",
            *[v for prefix, _ in columns for v in (f"{s[prefix + '_final']:.4f}", f"{s[prefix + '_gap_points']:+.1f}")],
            f"{s['lora_best']:.4f}", f"{s['full_best']:.4f}",
            f"{s['gap_best_points']:+.1f}", others or "-", f"{s['majority_accuracy']:.4f}",
            f"{s['lora_trainable_percent']:.3f}", f"{s['lora_s_per_epoch']:.0f} / {s['full_s_per_epoch']:.0f}",
            verdict(s)]) + " |")
    return "\n".join(lines)


def chart(summaries: list[dict], path: Path, columns: list[tuple[str, str]] = ()) -> None:
    fig, ax = plt.subplots(figsize=(11, 5))
    xs = range(len(summaries))
    lr = summaries[0]["lora_lr"]
    colors = ["tab:orange", "tab:green", "tab:purple", "tab:brown"]
    bars = [(f"LoRA (r=8, query+value, head trained, lr {lr})", "lora_final", "tab:blue"),
            *[(label, f"{prefix}_final", colors[i % len(colors)]) for i, (prefix, label) in enumerate(columns)],
            ("full fine-tuning", "full_final", "tab:gray")]
    width = 0.8 / len(bars)
    for i, (label, key, color) in enumerate(bars):
        offset = (i - (len(bars) - 1) / 2) * width
        values = [s[key] for s in summaries]
        ax.bar([x + offset for x in xs], values, width, label=label, color=color)
        for x, v in zip(xs, values):
            ax.text(x + offset, v + 0.01, f"{v:.3f}", ha="center", va="bottom", fontsize=6, rotation=90)
    for x, s in zip(xs, summaries):
        # What always answering the most common label scores: accuracy, or 0 for Matthews correlation.
        chance = 0.0 if s["metric"] == "matthews_correlation" else s["majority_accuracy"]
        ax.hlines(chance, x - 0.45, x + 0.45, colors="black", linestyles="dashed", linewidth=1.2,
                  label="majority class" if x == 0 else None)
    ax.set_xticks(list(xs), [f"{s['task']}\n({LABELS.get(s['metric'], s['metric'])})" for s in summaries])
    ax.set_ylabel("final eval metric")
    ax.set_title("LoRA against full fine-tuning, all-MiniLM-L6-v2, short CPU schedules", pad=6)
    ax.set_ylim(0, 1.25)
    ax.legend(loc="upper center", ncol=2, fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    lora_lr = None
    if argv[:1] == ["--lora_lr"]:
        lora_lr, argv = argv[1], argv[2:]
    columns = []
    while argv[:1] == ["--column"]:
        prefix, eq, label = argv[1].partition("=")
        if not eq:
            raise SystemExit(f"--column {argv[1]!r}: give PREFIX=LABEL, e.g. head_only='LoRA, classifier only'")
        columns.append((prefix, label))
        argv = argv[2:]
    runs, out, tasks = Path(argv[0]), Path(argv[1]), argv[2:]
    summaries = []
    for task in tasks:
        rows = read(runs, task, lora_lr)
        majority = majority_accuracy(runs / f"lora_vs_full_{task}" / rows["lora"]["setting"])
        summary = summarize(task, rows, majority)
        for prefix, _ in columns:
            summary[f"{prefix}_final"] = variant_final(runs, prefix, task, summary["metric"])
            summary[f"{prefix}_gap_points"] = 100 * (summary[f"{prefix}_final"] - summary["full_final"])
        summaries.append(summary)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(summaries, columns)
    (out / "summary.md").write_text(table + "\n")
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for s in summaries for k in s)))
        writer.writeheader()
        writer.writerows(summaries)
    chart(summaries, out / "lora_vs_full.png", columns)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
