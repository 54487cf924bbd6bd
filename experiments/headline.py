"""The headline at three or more seeds: LoRA minus full fine-tuning on every task, for the two LoRA scopes.

    python experiments/headline.py OUT_DIR

Reads the paired rows of the summaries seed_spread.py wrote (experiments/<summary>/spread.md; SOURCES below says
which summary and which row holds each task's figure), so it runs without the run folders. Writes
OUT_DIR/headline.md (one row per task: full fine-tuning's mean, each scope's mean gap with its 95% interval and
seed count, and whether within 1 point is shown) and OUT_DIR/headline.png (each scope's per-seed gaps on each task, against the 1-point target).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


EXPERIMENTS = Path(__file__).resolve().parent
# The two LoRA scopes, both 222,338 trainable weights on MiniLM (0.976%; 223,108 with AG News' four classes).
SCOPES = {"qv": "LoRA q,v r=8", "ffn2": "LoRA q,v,o + feed-forward r=2"}
# task -> (metric, summary holding its full runs, {scope: (summary, its row in the paired table)}). Each row's
# LoRA runs have twice full fine-tuning's epochs (RTE: 20 against 10).
SOURCES = {
    "SST-2": ("accuracy", "levers_sst2", {"qv": ("levers_sst2", "sweep=epochs4_sst2"),
                                          "ffn2": ("ffn2_sst2", "sweep=ffn2_sst2,")}),
    "CoLA": ("MCC", "levers_cola", {"qv": ("levers_cola", "method=lora,"),
                                    "ffn2": ("levers_cola", "sweep=ffn2_cola,")}),
    "MRPC": ("accuracy", "levers_mrpc", {"qv": ("levers_mrpc", "method=lora,"),
                                         "ffn2": ("levers_mrpc", "sweep=ffn2_mrpc,")}),
    "RTE": ("accuracy", "rte_levers", {"qv": ("rte_levers", "method=lora,"),
                                       "ffn2": ("rte_levers", "sweep=rte_ffn2,")}),
    "AG News": ("accuracy", "long_seeds_agnews", {"qv": ("long_seeds_agnews", "method=lora,"),
                                                  "ffn2": ("ffn2_agnews", "sweep=ffn2_agnews,")}),
}
# The tasks the feed-forward scope was chosen on, on the same validation rows and seeds it is reported on.
CHOSEN_ON = {"CoLA", "MRPC"}


def verdict(ci: str) -> str:
    """Within 1 point only where the 95% interval's lower end is at or above -1; "no" where its upper end is below
    -1; otherwise (the interval crosses -1, or it is unknown) "not shown"."""
    interval = parse_interval(ci)
    if interval is not None and interval[0] >= -1.0:
        return "yes"
    if interval is not None and interval[1] < -1.0:
        return "no"
    return "not shown"


def table_rows(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """The two Markdown tables of a spread.md (per-setting means, paired gaps), as lists of cells."""
    tables: list[list[list[str]]] = [[]]
    for line in path.read_text().splitlines():
        if not line.strip():
            tables.append([])
        elif line.startswith("|") and not line.startswith("|---"):
            tables[-1].append([c.strip() for c in line.strip("|").split("|")])
    if len(tables) != 2:
        raise SystemExit(f"{path}: expected a means table and a paired table (seed_spread.py's output)")
    return tables[0][1:], tables[1][1:]


def find(rows: list[list[str]], prefix: str, path: Path) -> list[str]:
    hits = [r for r in rows if r[0].replace(" ", "").startswith(prefix.replace(" ", ""))]
    if len(hits) != 1:
        raise SystemExit(f"{path}: {len(hits)} rows start with {prefix!r}; expected one")
    return hits[0]


def parse_interval(cell: str) -> tuple[float, float] | None:
    """seed_spread.py's interval cell (e.g. `-4.7 to +5.5`) as two numbers; None for its `nan`."""
    match = re.fullmatch(r"([+-][\d.]+) to ([+-][\d.]+)", cell)
    return (float(match[1]), float(match[2])) if match else None


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit("usage: python experiments/headline.py OUT_DIR")
    out = Path(argv[0])
    lines = ["| task | metric | full fine-tuning (seeds: mean) | "
             + " | ".join(f"{name} - full, pts (95% interval; seeds)" for name in SCOPES.values())
             + " | within 1 point (95% interval at or above -1)? |",
             "|---|---|---|" + "---|" * len(SCOPES) + "---|"]
    labels, gaps, intervals, means = [], [], [], []  # the plot's rows
    for task, (metric, full_summary, scopes) in SOURCES.items():
        path = EXPERIMENTS / full_summary / "spread.md"
        full_rows, _ = table_rows(path)
        full = find(full_rows, "method=full,", path)
        cells, met = [], []
        for scope, name in SCOPES.items():
            path = EXPERIMENTS / scopes[scope][0] / "spread.md"
            row = find(table_rows(path)[1], scopes[scope][1], path)
            mean, seeds, ci = float(row[2]), row[1], row[5]
            cells.append(f"{mean:+.2f} ({ci}; {seeds})")
            met.append(f"{name.split(' ', 1)[1]}: {verdict(ci)}")
            labels.append(f"{task}: {name}")
            gaps.append([float(v) for v in row[6].split()])
            intervals.append(parse_interval(ci))
            means.append(mean)
        chosen = " (feed-forward scope chosen here)" if task in CHOSEN_ON else ""
        lines.append(f"| {task}{chosen} | {metric} | {full[1]}: {float(full[2]):.4f} | {' | '.join(cells)} | "
                     f"{'; '.join(met)} |")
    text = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "headline.md").write_text(text + "\n")
    print(text)
    from lorakit.plots import plot_paired_gaps

    plot_paired_gaps(labels, gaps, intervals, out / "headline.png",
                     title="LoRA - full fine-tuning by task, final metric, paired by seed (points)",
                     xlabel="LoRA - full, final metric (points; per-seed gaps as the summaries print them)",
                     means=means)
    print(f"wrote {out / 'headline.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
