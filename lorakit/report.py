"""What a finished run leaves beside its adapter: metrics.json, the log history and a learning-curve plot."""

from __future__ import annotations

from pathlib import Path

# Figures are drawn on matplotlib.figure.Figure, not pyplot: no backend or global state is touched, so
# importing this module (and plotting from a thread or a notebook) leaves the caller's matplotlib as it was.
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def summarize(log_history: list[dict], final_eval: dict, train_output, params: dict, headline: str) -> dict:
    """The figures a reader of the run wants first, as one flat JSON-able dict."""
    key = f"eval_{headline}"
    evals = [e[key] for e in log_history if key in e]
    metrics = dict(params)
    metrics.update({k: v for k, v in final_eval.items() if k.startswith("eval_")})
    if evals:
        metrics[f"best_{key}"] = max(evals)
    if train_output is not None:
        metrics.update({k: v for k, v in train_output.metrics.items()
                        if k in ("train_runtime", "train_samples_per_second", "train_steps_per_second",
                                 "train_loss", "epoch")})
    return metrics


def plot_learning_curve(log_history: list[dict], headline: str, path: Path, title: str = "") -> None:
    """Train and eval loss (left axis) and the eval headline metric (right axis) against the step."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    metric = [(e["step"], e[f"eval_{headline}"]) for e in log_history if f"eval_{headline}" in e]
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue", alpha=0.8)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", color="tab:orange")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    if metric:
        ax2 = ax.twinx()
        ax2.plot(*zip(*metric), "s--", label=f"eval {headline}", color="tab:green")
        ax2.set_ylabel(headline)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, loc="center right")
    ax.set_title(title or "learning curve")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
