"""Sweep plots: eval metric against step (one line per swept value), best metric per setting, metric against
trainable parameters. Each takes plain lists, so a script that merges several sweeps can draw them too."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

# Figures are drawn on matplotlib.figure.Figure, not pyplot: no backend or global state is touched, so
# importing this module (and plotting from a thread or a notebook) leaves the caller's matplotlib as it was.
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator


@dataclass
class Curve:
    """One line: `label` in the legend, drawn in the panel titled `panel` ("" when there is one panel)."""

    label: str
    points: list[tuple[float, float]]
    panel: str = ""
    style: dict = field(default_factory=dict)


def plot_curves(curves: list[Curve], metric: str, path: Path, *, title: str = "", legend_title: str = "",
                xlabel: str = "step") -> None:
    """Eval `metric` against step, one line per curve, one panel per distinct `panel` (in first-seen order)."""
    panels = list(dict.fromkeys(c.panel for c in curves)) or [""]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5.2 * cols, 3.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax, panel in zip(axes.flat, panels):
        for curve in (c for c in curves if c.panel == panel):
            if curve.points:
                ax.plot(*zip(*curve.points), marker="o", markersize=3, label=curve.label, **curve.style)
        ax.set_title(panel, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and epochs: no 12.4 between 12 and 13
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"eval {metric}")
        ax.grid(alpha=0.3)
        ax.legend(title=legend_title or None, fontsize=8, title_fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title or f"eval {metric} against {xlabel}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_best_bars(labels: list[str], values: list[float], notes: list[str], metric: str, path: Path, *,
                   title: str = "") -> None:
    """A horizontal bar per setting (top to bottom in the given order), its value and `note` written beside it."""
    fig = Figure(figsize=(8, 0.45 * len(labels) + 1.4))
    ax = fig.subplots()
    ys = list(range(len(labels)))[::-1]
    ax.barh(ys, values, color="tab:blue", alpha=0.8)
    ax.set_yticks(ys, labels, fontsize=8)
    low = min(values) if values else 0.0
    high = max(values) if values else 1.0
    # Start the axis near the smallest bar: differences of a point or two are the point of the chart.
    span = max(high - low, 0.02)
    left, right = max(0.0, low - span) if low >= 0 else low - span, high + 0.1 * span
    ax.set_xlim(left, right)
    for y, value, note in zip(ys, values, notes):
        # Written inside the end of a long bar, after a short one, so that no text runs off the axes.
        if value - left >= 0.4 * (right - left):
            ax.text(value, y, f"{value:.4f} {note} ", va="center", ha="right", fontsize=8, color="white")
        else:
            ax.text(max(value, left), y, f" {value:.4f} {note}", va="center", ha="left", fontsize=8)
    ax.set_xlabel(f"best eval {metric}")
    ax.set_title(title or f"best eval {metric} per setting", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_metric_vs_params(labels: list[str], params: list[int], values: list[float], metric: str, path: Path, *,
                          title: str = "") -> None:
    """Best eval `metric` against trainable parameters (log scale), each point labelled with its setting."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.scatter(params, values, color="tab:blue", zorder=3)
    for label, x, y in zip(labels, params, values):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if params and min(params) > 0:
        ax.set_xscale("log")
    # Counts as people write them ("165k"), not 1.65x10^5; within one decade the minor ticks carry the labels.
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: count_label(x)))
    if params and min(params) > 0 and max(params) < 10 * min(params):
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: count_label(x)))
    ax.margins(x=0.2, y=0.15)  # room for the labels of the outermost points
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(f"best eval {metric}")
    ax.set_title(title or f"best eval {metric} against trainable parameters", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def count_label(x: float) -> str:
    """A parameter count for an axis: 950, 165k, 1.2M."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:.3g}{suffix}"
    return f"{x:.0f}"


def plot_paired_gaps(labels: list[str], gaps: list[list[float]], intervals: list[tuple[float, float] | None],
                     path: Path, *, target: float = -1.0, title: str = "", xlabel: str = "",
                     means: list[float] | None = None) -> None:
    """One row per setting (top to bottom in the given order): its per-seed gaps as dots, their mean as a diamond
    with the 95% interval as a line (none for a single seed), and lines at 0 and at `target`. `means` gives the
    means when the gaps are rounded (read back from a table), so the diamond sits at the exact one.

    The axis spans the per-seed gaps: an interval reaching beyond them (a setting run at two or three seeds) is
    cut at the edge, marked with an arrowhead, and its ends written beside the mean."""
    points = [v for values in gaps for v in values] + [0.0, target]
    left, right = min(points) - 1.5, max(points) + 1.5
    fig = Figure(figsize=(10, 0.55 * len(labels) + 1.6))
    ax = fig.subplots()
    ys = list(range(len(labels)))[::-1]
    for i, (y, values, interval) in enumerate(zip(ys, gaps, intervals)):
        ax.scatter(values, [y] * len(values), s=14, color="tab:gray", alpha=0.6, zorder=2)
        mean = means[i] if means is not None else sum(values) / len(values)
        note = f"{mean:+.1f} (n={len(values)})"
        if interval is not None:
            low, high = max(interval[0], left), min(interval[1], right)
            ax.plot([low, high], [y, y], color="tab:blue", linewidth=2, zorder=3)
            if interval[0] < left:
                ax.scatter([left], [y], marker="<", s=30, color="tab:blue", zorder=3)
            if interval[1] > right:
                ax.scatter([right], [y], marker=">", s=30, color="tab:blue", zorder=3)
            if (low, high) != tuple(interval):
                note += f", interval {interval[0]:+.0f} to {interval[1]:+.0f}"
        ax.scatter([mean], [y], marker="D", s=40, color="tab:blue", zorder=4)
        ax.annotate(note, (mean, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.axvline(target, color="tab:green", linestyle="--", linewidth=1, label=f"target ({target:+g})")
    ax.set_xlim(left, right)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.set_xlabel(xlabel or "difference per seed (points)")
    ax.set_title(title or "paired differences per seed, mean and 95% interval", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
