"""Training throughput of one pipeline on one workload, measured in this process (bench/run.py runs each in its own).

    python -m bench.training --pipeline plain|kit --model DIR --workload sst2|agnews --out result.json

plain: the pipeline as usually written (the Hugging Face text-classification notebook): the tokenizer pads every
    text to max_length 128, PEFT LoRA r=8 on query and value, `Trainer` with fp32, batch 16, optim="adamw_torch"
    and the random sampler. Every batch has the same shape (16 x 128), so the per-sample time does not depend on
    which samples a step draws: it is timed over `--plain_steps` steps after the first.
kit: train.py's own code path, `lorakit.recipe.parse_recipe` + `train.train`, with the shipped recipe
    (`--task`) and only the data, length, epoch and output keys overridden. The first epoch builds the kernels
    for every batch shape; the TIMED_EPOCHS after it, timed, are the steady state a longer run lives in.
Both train on the first `--samples` rows of the workload's train split, truncated at 128 tokens. Model loading
and tokenisation are outside the timed window for both. The result (samples/s, real and padded tokens/s, the
useful FLOPs per sample, peak RSS of the process) is written as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from bench import hardware
from lorakit.cpu import allocator

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MAX_LENGTH = 128  # the plain pipeline's padding length, and the truncation both pipelines share
# Epochs of the kit timed after its first: one epoch of 2,048 SST-2 rows is ~5 s at batch 16, shorter than the
# plain pipeline's timed steps (~9 s) and short enough for a neighbour's burst on a shared machine to move it.
TIMED_EPOCHS = 2
LORA = dict(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"])


@dataclass(frozen=True)
class Workload:
    """A slice of a shipped task's training data, named by the recipe that trains on it."""

    task: str  # configs/<task>.yaml
    dataset: Path
    config_name: str | None
    text_column: str
    num_labels: int
    # Recipe overrides that keep the kit on the plain pipeline's rows: AG News' recipe would hold 5% of train out for
    # validation and score its test split after training; here it trains on train's first rows and evaluates on test.
    overrides: tuple[str, ...] = ()


WORKLOADS = {
    "sst2": Workload("sst2", SHARED_DATA / "glue", "sst2", "sentence", 2),
    "agnews": Workload("agnews", SHARED_DATA / "ag_news", None, "text", 4,
                       ("--validation_split_percentage", "none", "--eval_split", "test", "--test_split", "none")),
}


def train_texts(workload: Workload, samples: int) -> "datasets.Dataset":  # noqa: F821
    import datasets

    split = datasets.load_dataset(str(workload.dataset), workload.config_name, split="train")
    return split.select(range(min(samples, len(split))))


def token_lengths(model_dir: str, workload: Workload, samples: int) -> list[int]:
    """Real (unpadded) token count of each of the first `samples` training texts, truncated at MAX_LENGTH."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = list(train_texts(workload, samples)[workload.text_column])
    return [len(ids) for ids in tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]]


ROBERTA_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                    max_position_embeddings=514, type_vocab_size=1)  # roberta-base's config.json


def random_model(folder: Path, model_type: str, tokenizer_dir: str, **sizes) -> str:
    """Save a randomly initialised `model_type` backbone with the given sizes and `tokenizer_dir`'s tokenizer.

    Only the matmul shapes matter for speed: the vocabulary is the borrowed tokenizer's, so the token counts
    are that tokenizer's too. Returns the folder as a string (a `model_name_or_path`).
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                  **sizes)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


class StepTimer(TrainerCallback):
    """Wall-clock time and padded tokens seen (Trainer's own count) at every optimizer step and epoch edge."""

    def __init__(self):
        self.steps: list[tuple[float, int]] = []
        self.epochs: list[dict] = []
        self._epoch_start: tuple[float, int, int] | None = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch_start = (time.perf_counter(), state.num_input_tokens_seen, state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append((time.perf_counter(), state.num_input_tokens_seen))

    def on_epoch_end(self, args, state, control, **kwargs):
        start, tokens, step = self._epoch_start
        self.epochs.append({"seconds": time.perf_counter() - start,
                            "padded_tokens": state.num_input_tokens_seen - tokens, "steps": state.global_step - step})


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kB


def _quiet() -> None:
    import transformers

    transformers.logging.set_verbosity_error()


def plain(model_dir: str, workload: Workload, samples: int, steps: int) -> dict:
    """The usual notebook: pad to 128 at tokenisation, fp32, batch 16, adamw_torch, random sampling."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    _quiet()
    batch = 16
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = train_texts(workload, samples).rename_column("label", "labels")
    data = data.map(lambda b: tokenizer(b[workload.text_column], padding="max_length", truncation=True,
                                        max_length=MAX_LENGTH), batched=True,
                    remove_columns=[c for c in data.column_names if c != "labels"])
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=workload.num_labels)
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", **LORA))
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch, optim="adamw_torch",
                                 learning_rate=5e-4, max_steps=steps + 1, report_to="none", save_strategy="no",
                                 logging_steps=10, include_num_input_tokens_seen="all", seed=42)
        Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=[timer]).train()
    # The first step builds every kernel; from its end on, each step runs the same [16, 128] shapes.
    (t0, tok0), (t1, tok1) = timer.steps[0], timer.steps[-1]
    return {"seconds": t1 - t0, "samples": batch * (len(timer.steps) - 1), "padded_tokens": tok1 - tok0,
            "batch": batch, "precision": "fp32", "timed": f"steps 2-{len(timer.steps)}"}


def kit(model_dir: str, workload: Workload, samples: int, eval_samples: int, extra: list[str]) -> dict:
    """train.py's own code path on the shipped recipe; the epochs after the first are timed."""
    from lorakit import hardware as kit_hardware
    from lorakit import training
    from lorakit.recipe import parse_recipe
    from train import train

    _quiet()
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        resolved = parse_recipe([
            "--task", workload.task, "--model_name_or_path", model_dir, "--dataset_name", str(workload.dataset),
            "--max_train_samples", str(samples), "--max_eval_samples", str(eval_samples),
            "--max_seq_length", str(MAX_LENGTH), "--num_train_epochs", str(1 + TIMED_EPOCHS),
            "--output_dir", str(Path(out) / "run"), "--include_num_input_tokens_seen", "true", *workload.overrides,
            *extra])
        metrics = train(resolved, callbacks=(timer,))
        kwargs, _ = training.training_arguments(resolved)
    first, timed = timer.epochs[0], timer.epochs[1:]
    return {"seconds": sum(e["seconds"] for e in timed), "samples": samples * len(timed),
            "padded_tokens": sum(e["padded_tokens"] for e in timed),
            "batch": kwargs["per_device_train_batch_size"], "precision": kit_hardware.precision_label(kwargs),
            "timed": f"epochs 2-{len(timer.epochs)}", "first_epoch_samples_per_s": samples / first["seconds"],
            "eval_samples_per_s": metrics["eval_samples_per_second"],
            "overrides": " ".join(extra)}


def measure(pipeline: str, model_dir: str, workload_name: str, samples: int, *, plain_steps: int = 20,
            eval_samples: int = 512, extra: list[str] = ()) -> dict:
    """Run one pipeline and return its throughput, token and FLOP figures and this process's peak RSS."""
    from transformers import AutoConfig

    workload = WORKLOADS[workload_name]
    if pipeline == "plain":
        result = plain(model_dir, workload, samples, plain_steps)
    else:
        result = kit(model_dir, workload, samples, eval_samples, list(extra))
    lengths = token_lengths(model_dir, workload, samples)
    config = AutoConfig.from_pretrained(model_dir, num_labels=workload.num_labels)
    shapes = hardware.model_shapes(config)
    mean_tokens = statistics.fmean(lengths)
    per_second = result["samples"] / result["seconds"]
    result.update({
        "pipeline": pipeline, "workload": workload_name, "model": Path(model_dir).name, "train_rows": samples,
        "samples_per_s": per_second,
        "tokens_per_s": per_second * mean_tokens,  # real tokens: the samples drawn are the data's own mix
        "padded_tokens_per_s": result["padded_tokens"] / result["seconds"],
        "mean_tokens": mean_tokens,
        "flops_per_sample": statistics.fmean(hardware.lora_train_flops(shapes, t) for t in lengths),
        "shapes": shapes,
        "peak_rss_mb": _peak_rss_mb(),
        "allocator": allocator.active(),
    })
    if pipeline == "plain":
        result["padded_flops_per_sample"] = hardware.lora_train_flops(shapes, MAX_LENGTH)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", choices=("plain", "kit"), required=True)
    parser.add_argument("--model", required=True, help="model folder (weights and tokenizer)")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--samples", type=int, required=True, help="training rows (first N of the train split)")
    parser.add_argument("--plain_steps", type=int, default=20, help="timed steps of the plain pipeline")
    parser.add_argument("--eval_samples", type=int, default=512, help="evaluation rows of the kit's run")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    args, extra = parser.parse_known_args(argv)
    result = measure(args.pipeline, args.model, args.workload, args.samples, plain_steps=args.plain_steps,
                     eval_samples=args.eval_samples, extra=extra)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
