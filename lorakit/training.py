"""One training run: resolve, check, load, train with transformers.Trainer, save a self-contained adapter."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import yaml

from . import data as data_lib
from . import allocator, evaluation, hardware, modeling, report, warmstart
from .errors import UsageError
from .fileio import check_output_dir, staged_folder, write_json_atomic
from .recipe import Recipe, Resolved
from .runfolder import CURVE_FILE, LOG_FILE, METRICS_FILE, RECIPE_FILE, LabelInfo, write_labels

log = logging.getLogger("lorakit")

# Kit defaults under the recipe: TrainingArguments values that suit every task unless a recipe says otherwise.
TRAINING_DEFAULTS = {
    "optim": "adamw_torch_fused",
    "train_sampling_strategy": "group_by_length",
    "report_to": "none",
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "logging_strategy": "steps",
    "logging_steps": 10,
    "save_total_limit": 2,
    "dataloader_num_workers": 0,
}


def setup_logging(is_main: bool) -> None:
    logging.basicConfig(format="[lorakit] %(message)s", level=logging.INFO if is_main else logging.WARNING,
                        force=True)


def training_arguments(resolved: Resolved) -> tuple[dict, list[str]]:
    """TrainingArguments kwargs: kit defaults < recipe < command line, then the hardware decisions."""
    recipe = resolved.recipe
    kwargs = {**TRAINING_DEFAULTS, **resolved.training}
    kwargs.setdefault("output_dir", str(Path("outputs") / (recipe.task_name or "run")))
    kwargs.setdefault("metric_for_best_model", recipe.headline_metric)
    # The datasets hold only model inputs, labels and the `length` column the length-grouped sampler reads.
    kwargs["remove_unused_columns"] = False
    kwargs["label_names"] = ["labels"]
    # The kit pushes the small adapter itself (with a model card); Trainer would push whole checkpoints.
    kwargs["push_to_hub"] = False
    kwargs["resume_from_checkpoint"] = None
    return hardware.resolve_precision(kwargs)


def _resume_path(resolved: Resolved, output_dir: Path) -> str | None:
    value = resolved.training.get("resume_from_checkpoint")
    if not value:
        return None
    if value == "latest":
        last = last_complete_checkpoint(output_dir)
        if last is None:
            raise UsageError(f"--resume_from_checkpoint latest found no checkpoint-* in {str(output_dir)!r}; "
                             "pass the interrupted run's own --output_dir, or drop the flag to start afresh")
        return last
    if not Path(value).is_dir():
        raise UsageError(f"checkpoint {value!r} not found; pass a checkpoint-N folder or 'latest'")
    return value


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest checkpoint-N folder that was written to the end, or None.

    A run killed while saving leaves a checkpoint without its trainer_state.json (Trainer writes that file last)
    or with a truncated one; transformers' get_last_checkpoint would pick it and the resume would fail.
    """
    if not output_dir.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in output_dir.iterdir()
                   if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name)))
    for _, path in reversed(found):
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return str(path)
    return None


def prepare(resolved: Resolved, *, load_weights: bool = True, seed: int = 42,
            validation_rows: list[int] | None = None):
    """Everything up to a ready model: data checked and loaded, config, parameter report, model.

    The parameter count and the budget are checked on a weightless (meta-device) copy first, so a run over
    budget or with a bad LoRA target fails before any weights are read. With load_weights=False (a dry run)
    the meta model is returned. `seed` and `validation_rows` go to data.load_task_data (validation carved from
    train). Returns (task_data, config, model, report); raises UsageError.
    """
    recipe = resolved.recipe
    task_data = data_lib.load_task_data(recipe, seed=seed, validation_rows=validation_rows)
    config = modeling.load_config(recipe, task_data.label_names)
    modeling.check_seq_length(recipe, config)
    model = modeling.build_model(recipe, config, random_weights=True)
    params = modeling.param_report(model)
    modeling.check_budget(recipe, params)
    if recipe.head_learning_rate is not None:
        modeling.head_weights(recipe, config, model)  # fails before any weights are read
    warm = warmstart.plan(recipe, model, task_data.label_names)  # likewise
    if load_weights:
        model = modeling.build_model(recipe, config)
        params = modeling.param_report(model)
        if warm is not None:
            warmstart.load(warm, model)
    return task_data, config, model, params


def prepare_step(model: torch.nn.Module, recipe: Recipe, half: torch.dtype | None, device_type: str, *,
                 sharded: bool = False) -> list[str]:
    """What training does to the built model for a faster step (also what experiments/step_time.py times):
    frozen linear weights stored in the half dtype under LoRA, and on CPU the kit's dropout and attention.
    Returns the log lines saying what changed."""
    lines = []
    # Sharding engines want one dtype per flat parameter group; quantised layers are not nn.Linear anyway.
    if half is not None and recipe.method == "lora" and not sharded:
        stored = modeling.store_frozen_linears(model, half)
        lines.append(f"frozen linear layers kept in {half} (autocast would cast them at every step): {stored}")
    if recipe.fast_dropout and device_type == "cpu":
        from .attention import MATH_KERNEL_MAX_TOKENS, use_cpu_attention
        from .dropout import use_fast_dropout

        swapped = use_fast_dropout(model)
        lines.append(f"dropout layers drawing their masks four elements per random word (CPU; fast_dropout): {swapped}")
        if use_cpu_attention(model):
            lines.append("attention: SDPA with the probabilities' dropout drawn the same way, and SDPA's math kernel "
                         f"without dropout on rows up to {MATH_KERNEL_MAX_TOKENS} tokens (CPU training; "
                         "lorakit/attention.py)")
    return lines


def run(resolved: Resolved, callbacks: list | None = None) -> dict | None:
    """Train one recipe and save the adapter folder; returns its metrics (None for a dry run).

    `callbacks` (transformers.TrainerCallback) are handed to the Trainer: the benchmark times steps with one.
    """
    import torch
    from transformers import TrainingArguments, set_seed

    recipe = resolved.recipe
    kwargs, notes = training_arguments(resolved)
    output_dir = Path(kwargs["output_dir"])
    resume = _resume_path(resolved, output_dir)
    if not recipe.dry_run:
        check_output_dir(output_dir, overwrite=recipe.overwrite_output_dir, resuming=resume is not None)
    try:
        args = TrainingArguments(**kwargs)
    except (ValueError, TypeError) as err:
        raise UsageError(f"invalid training arguments: {err}") from None
    setup_logging(args.process_index == 0)
    set_seed(args.seed)
    stopping = evaluation.early_stopping(recipe, kwargs)

    with args.main_process_first(desc="loading data"):
        task_data, config, model, params = prepare(
            resolved, load_weights=not recipe.dry_run, seed=args.seed,
            validation_rows=evaluation.saved_validation_rows(output_dir) if resume else None)
    log.info("recipe: %s%s", resolved.source,
             f" with overrides {', '.join(f'{k}={v}' for k, v in resolved.overrides.items())}"
             if resolved.overrides else "")
    log.info("model: %s (%s), method %s%s", recipe.model_name_or_path, config.model_type, recipe.method,
             f", LoRA r={recipe.lora_r} alpha={recipe.lora_alpha} on {modeling.target_modules(recipe, config)}"
             f"{' with DoRA' if recipe.use_dora else ''} ({recipe.lora_impl})" if recipe.method == "lora" else "")
    log.info("data: %d train, %d eval%s rows%s, labels %s", len(task_data.train), len(task_data.eval),
             f" ({recipe.validation_split_percentage:g}% of train)" if task_data.validation_rows is not None else "",
             f", {len(task_data.test)} test rows scored once after training" if task_data.test is not None else "",
             task_data.label_names)
    log.info("device: %s x %d process(es); precision: %s; batch %d per device, %d effective",
             hardware.device_name(), args.world_size, hardware.precision_label(kwargs),
             args.per_device_train_batch_size,
             args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps)
    log.info("C allocator: %s", allocator.describe())
    for line in notes + params.lines():
        log.info(line)
    if recipe.dry_run:
        log.info("dry run: nothing trained or written")
        return None

    half = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
    for line in prepare_step(model, recipe, half, args.device.type, sharded=bool(args.fsdp or args.deepspeed)):
        log.info(line)

    if task_data.validation_rows is not None and args.process_index == 0:
        evaluation.save_validation_rows(output_dir, task_data.validation_rows, recipe.validation_split_percentage,
                                        args.seed)
    tokenizer = modeling.load_tokenizer(recipe)
    with args.main_process_first(desc="tokenising"):
        tokenized = data_lib.tokenize(task_data, tokenizer, recipe)

    collator = data_lib.PaddingCollator(tokenizer)
    # The classifiers' loss is a per-batch mean that ignores num_items_in_batch. Told otherwise, Trainer would
    # multiply it by the number of processes (train and eval loss doubled under 2-process DDP) and not divide it
    # by gradient_accumulation_steps (gradients that many times too large).
    (model.get_base_model() if modeling.is_peft(model) else model).accepts_loss_kwargs = False
    clock = _clock_class().resumed_from(resume)  # None: resumed from a checkpoint older than the clock
    trainer = trainer_class()(model=model, args=args, train_dataset=tokenized.train, eval_dataset=tokenized.eval,
                      processing_class=tokenizer, data_collator=collator,
                      compute_metrics=_metrics_fn(recipe, task_data),
                      callbacks=[*(callbacks or []), *([clock] if clock else []), *stopping])
    if recipe.head_learning_rate is not None:
        trainer.head_learning_rate = recipe.head_learning_rate
        trainer.head_modules = modeling.head_modules(recipe, config)
        head = modeling.head_weights(recipe, config, model)
        log.info("head (%s): %s trainable weights at learning rate %g; the rest at %g",
                 ", ".join(trainer.head_modules), f"{head:,}", recipe.head_learning_rate, args.learning_rate)
    if recipe.loraplus_lr_ratio is not None:
        trainer.loraplus_lr_ratio = recipe.loraplus_lr_ratio
        log.info("LoRA+: LoRA's B matrices at %g x learning rate %g = %g", recipe.loraplus_lr_ratio,
                 args.learning_rate, recipe.loraplus_lr_ratio * args.learning_rate)
    # The model was built alike on every process (same seed), and Trainer seeded them alike again; from here
    # each rank draws its own dropout masks. The data order stays in step: accelerate syncs the sampler's RNG.
    set_seed(args.seed + args.process_index)
    train_output = trainer.train(resume_from_checkpoint=resume)
    final_eval = trainer.evaluate()
    metrics = report.summarize(trainer.state.log_history, final_eval, train_output, params.as_dict(),
                               recipe.headline_metric)
    metrics.update(evaluation.stopping_summary(trainer.state, args))
    info = LabelInfo(label_names=task_data.label_names, text_columns=list(recipe.text_columns),
                     max_seq_length=recipe.max_seq_length)
    tested = None
    if task_data.test is not None:  # scored once, with the kept checkpoint; never used to choose it
        tested = evaluation.predict_split(trainer, tokenized.test, task_data.test, info, recipe.metrics)
        metrics.update(tested.metrics)
    clock = trainer.train_clock()  # Trainer may have swapped in its own copy (restore_callback_states_...)
    if resume and clock:
        metrics.update(clock.whole_run(train_output.metrics, trainer.state.max_steps,
                                       _schedule_samples(args, len(tokenized.train))))
    # Under FSDP and DeepSpeed ZeRO-3 the weights are sharded: gathering them is a collective all ranks join.
    state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.is_world_process_zero():
        save_run(trainer, tokenizer, resolved, info, metrics, output_dir, state_dict=state_dict, tested=tested)
        log.info("saved adapter and metrics to %s: eval %s = %.4f%s", output_dir, recipe.headline_metric,
                 metrics.get(f"eval_{recipe.headline_metric}", float("nan")),
                 f", test {recipe.headline_metric} = {metrics[f'test_{recipe.headline_metric}']:.4f}"
                 if tested is not None else "")
    trainer.accelerator.wait_for_everyone()
    return metrics


def _schedule_samples(args, train_rows: int) -> float:
    """Samples in the whole schedule, counted as Trainer counts them for train_samples_per_second."""
    if args.max_steps > 0:
        return args.max_steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    return train_rows * args.num_train_epochs


def _clock_class():
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    class TrainClock(TrainerCallback, ExportableState):
        """Training seconds and the loss summed over a run's segments. Trainer's train_runtime and train_loss cover
        only the segment since the last resume; this callback's state goes into every checkpoint's
        trainer_state.json (Trainer saves any ExportableState callback's), so a resumed run adds what came before
        its checkpoint. KitTrainer hands it the segment's loss sum (private to Trainer) just before each save."""

        def __init__(self, seconds: float = 0.0, segments: int = 0, loss_sum: float | None = 0.0, steps: int = 0):
            self.seconds, self.segments, self.loss_sum, self.steps = seconds, segments, loss_sum, steps
            self._start, self.segment_loss_sum, self._step = None, 0.0, steps

        @classmethod
        def resumed_from(cls, checkpoint: str | None):
            """The clock as `checkpoint` saved it; a fresh one for a new run; None if the checkpoint predates
            the clock (its earlier seconds are unknown)."""
            if checkpoint is None:
                return cls()
            state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
            saved = (state.get("stateful_callbacks") or {}).get(cls.__name__)
            return cls(**saved["attributes"]) if saved else None

        def on_train_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self._step = state.global_step

        def state(self) -> dict:
            now = self.seconds + (time.perf_counter() - self._start if self._start is not None else 0.0)
            loss = None if self.loss_sum is None else self.loss_sum + self.segment_loss_sum
            return {"args": {}, "attributes": {"seconds": now, "segments": self.segments + 1, "loss_sum": loss,
                                               "steps": self._step}}

        def whole_run(self, train_metrics: dict, max_steps: int, samples: float) -> dict:
            """Trainer's train metrics for the whole run: this segment's (`train_metrics`) plus those before it."""
            total = self.seconds + train_metrics["train_runtime"]
            metrics = {"train_runtime": round(total, 4), "train_samples_per_second": round(samples / total, 3),
                       "train_steps_per_second": round(max_steps / total, 3), "train_segments": self.segments + 1}
            step = max(self._step, self.steps)  # a copy Trainer restored starts from its attributes alone
            if self.loss_sum is not None and step:
                metrics["train_loss"] = (self.loss_sum + train_metrics["train_loss"] * (step - self.steps)) / step
            return metrics

    return TrainClock


def trainer_class():
    """Trainer whose length-grouped sampler shuffles from its own generator, seeded by (seed, epoch).

    transformers' LengthGroupedSampler draws from the global RNG. Each rank seeds that RNG differently (its own
    dropout masks), so under DDP the ranks would cut their shards from different permutations (samples seen
    twice, others never); and a run resumed mid-epoch would re-draw that epoch's order from a different RNG state
    than the uninterrupted run had. Trainer and accelerate call set_epoch on the sampler before every epoch.
    """
    import torch
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        def __init__(self, batch_size: int, lengths: list[int], seed: int):
            super().__init__(batch_size, lengths=lengths)
            self.seed, self.epoch = seed, 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):
            self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
            return super().__iter__()

    class KitTrainer(Trainer):
        # Set on the instance by `run` when the recipe gives the head its own learning rate, or LoRA+'s ratio.
        head_learning_rate: float | None = None
        head_modules: list[str] = []
        loraplus_lr_ratio: float | None = None

        def train_clock(self):
            """The run's TrainClock among the callbacks, or None."""
            return next((cb for cb in self.callback_handler.callbacks if type(cb).__name__ == "TrainClock"), None)

        def _save_checkpoint(self, model, trial):
            if clock := self.train_clock():  # the loss this segment has summed, logged or not, for the clock's state
                clock.segment_loss_sum = self._total_loss_scalar + self._tr_loss.item()
            super()._save_checkpoint(model, trial)

        def create_optimizer(self, model=None):
            """Trainer's optimizer (its weight-decay groups, the recipe's optim), with the head's parameters
            moved to groups of their own at head_learning_rate and LoRA's B matrices to groups at
            loraplus_lr_ratio times their rate; the scheduler then scales every group alike. The groups come out
            in the same order every time, so a checkpoint's optimizer state loads back into them."""
            fresh = self.optimizer is None
            optimizer = super().create_optimizer(model)
            model = self.model if model is None else model
            if fresh and self.head_learning_rate is not None:
                split_head_groups(optimizer, model, self.head_modules, self.head_learning_rate)
            if fresh and self.loraplus_lr_ratio is not None:
                split_lora_b_groups(optimizer, model, self.loraplus_lr_ratio)
            return optimizer

        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is LengthGroupedSampler:
                seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
                sampler = EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
            return sampler

    return KitTrainer


def split_head_groups(optimizer, model, modules: list[str], lr: float) -> int:
    """Move the head's parameters (modeling.is_head_parameter) out of each optimizer group into a copy of that
    group (same weight decay and options) at learning rate `lr`; returns how many weights moved. Done before
    the first step, so there is no optimizer state to carry."""
    head = {id(p) for n, p in model.named_parameters() if p.requires_grad and modeling.is_head_parameter(n, modules)}
    return _split_groups(optimizer, head, lambda group: lr)


def split_lora_b_groups(optimizer, model, ratio: float) -> int:
    """LoRA+: move LoRA's B matrices (modeling.is_lora_b_parameter) out of each optimizer group into a copy of
    that group at `ratio` times its learning rate; returns how many weights moved. Before the first step."""
    b = {id(p) for n, p in model.named_parameters() if p.requires_grad and modeling.is_lora_b_parameter(n)}
    return _split_groups(optimizer, b, lambda group: group["lr"] * ratio)


def _split_groups(optimizer, chosen: set[int], lr_of) -> int:
    """Move the parameters whose id is in `chosen` from each group to a copy of it (same weight decay and
    options) at lr_of(group); drop the groups left empty. Returns how many weights moved."""
    moved = 0
    for group in list(optimizer.param_groups):
        mine = [p for p in group["params"] if id(p) in chosen]
        if not mine:
            continue
        group["params"] = [p for p in group["params"] if id(p) not in chosen]
        optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": mine,
                                   "lr": lr_of(group)})
        moved += sum(p.numel() for p in mine)
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    return moved


def _metrics_fn(recipe, task_data):
    from .metrics import trainer_metrics

    return trainer_metrics(recipe.metrics, len(task_data.label_names))


def save_run(trainer, tokenizer, resolved: Resolved, info: LabelInfo, metrics: dict,
             output_dir: Path, state_dict: dict | None = None, tested=None) -> None:
    """Write the adapter (head included), tokenizer, labels, recipe, metrics, log and plot, all or nothing; and
    the test split's predictions, report and plot (`tested`, an evaluation.Scored) when there is one.
    `state_dict` is the model's full state gathered across processes when the weights are sharded."""
    recipe = resolved.recipe
    history = trainer.state.log_history
    with staged_folder(output_dir, last=METRICS_FILE) as stage:
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(stage, state_dict=state_dict)
        tokenizer.save_pretrained(stage)
        write_labels(stage, info)
        (stage / RECIPE_FILE).write_text(yaml.safe_dump(resolved.as_dict(), sort_keys=False))
        write_json_atomic(stage / LOG_FILE, history)
        report.plot_learning_curve(history, recipe.headline_metric, stage / CURVE_FILE,
                                   title=f"{recipe.task_name or 'run'}: {recipe.method} on "
                                         f"{Path(recipe.model_name_or_path).name}")
        if tested is not None:
            evaluation.write_files(stage, tested)
        write_json_atomic(stage / METRICS_FILE, metrics)
