"""`--dry_run`'s plan: steps per epoch, total steps, and the training time a few timed steps on this machine
predict. Nothing is written; the timed model is built from the config with random weights (same shapes and
cost as the real one), so a folder holding only config.json and the tokenizer is enough."""

from __future__ import annotations

import logging
import math
import statistics
import time

import torch

from . import modeling
from .recipe import Recipe

log = logging.getLogger("lorakit")

TIMED_STEPS = 3


def steps(rows: int, args) -> tuple[int, int]:
    """Optimizer steps per epoch and in the whole run, counted as Trainer counts them."""
    batches = math.ceil(rows / (args.per_device_train_batch_size * args.world_size))
    per_epoch = max(1, batches // args.gradient_accumulation_steps)
    total = args.max_steps if args.max_steps > 0 else math.ceil(per_epoch * args.num_train_epochs)
    return per_epoch, total


def time_step(recipe: Recipe, args, config, task_data) -> float | None:
    """Median seconds of a training step over TIMED_STEPS steps (after one warm-up) on batches of the training
    rows, or None when the tokenizer cannot be loaded."""
    from .errors import UsageError
    from .training import prepare_step

    try:
        tokenizer = modeling.load_tokenizer(recipe)
    except UsageError as err:
        log.info("time estimate skipped: %s", err)
        return None
    torch.manual_seed(args.seed)
    model = modeling.apply_method(recipe, modeling.AutoModelForSequenceClassification.from_config(config), config)
    modeling.use_pad_token(model, tokenizer)  # as training does: decoders find each row's last token by it
    half = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
    prepare_step(model, recipe, half, "cpu" if args.use_cpu or not torch.cuda.is_available() else "cuda")
    device = torch.device("cpu" if args.use_cpu or not torch.cuda.is_available() else "cuda")
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    batch = args.per_device_train_batch_size
    generator = torch.Generator().manual_seed(args.seed)
    rows = len(task_data.train)
    seconds = []
    for i in range(TIMED_STEPS + 1):
        picked = task_data.train.select(torch.randint(rows, (min(batch, rows),), generator=generator).tolist())
        inputs = tokenizer(*(list(picked[c]) for c in recipe.text_columns), truncation=True, padding=True,
                           max_length=recipe.max_seq_length, pad_to_multiple_of=8, return_tensors="pt").to(device)
        labels = torch.tensor(list(picked["labels"]), device=device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=half, enabled=half is not None):
            loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i:  # the first step warms up kernels and the allocator
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def log_plan(recipe: Recipe, args, config, task_data) -> None:
    """Log the dry run's plan: steps and, from a few timed steps, the training time."""
    per_epoch, total = steps(len(task_data.train), args)
    log.info("plan: %s train rows, %s steps per epoch, %s steps in all (batch %d per device x %d process(es) x %d "
             "accumulated)", f"{len(task_data.train):,}", f"{per_epoch:,}", f"{total:,}", args.per_device_train_batch_size,
             args.world_size, args.gradient_accumulation_steps)
    step = time_step(recipe, args, config, task_data)
    if step is not None:
        log.info("time: %.2f s per step (median of %d timed steps on this machine) x %s steps = about %s of "
                 "training, evaluation and saving not included", step, TIMED_STEPS, f"{total:,}",
                 _duration(step * total))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
