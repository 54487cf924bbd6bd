"""The steps of a training run that train.py takes in order: arguments, logging, the resolution report, the
faster step, the final metrics and the saved run folder."""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from pathlib import Path

import torch
import yaml

from . import hardware, labels, modeling, report
from .cpu import allocator
from .errors import UsageError
from .fileio import check_output_dir, final_folder, holds_run, next_folder, staged_folder, swap_in, write_json_atomic
from .hub import Run, build_card, hub_model_id
from .recipe import Recipe, Resolved
from .runfolder import CARD_FILE, CURVE_FILE, LABELS_FILE, LOG_FILE, METRICS_FILE, RECIPE_FILE, write_labels
from .trainingargs import KIT_DEFAULTS

log = logging.getLogger("lorakit")

TRAINING_DEFAULTS = KIT_DEFAULTS  # kit defaults under the recipe (lorakit.trainingargs, torch-free)


class _StderrHandler(logging.StreamHandler):
    """A handler that writes to sys.stderr as it is at each message (a redirect or pytest's capture made after
    logging was set up still sees the lines)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging(is_main: bool) -> None:
    """The `lorakit` logger prints `[lorakit] message` on stderr (INFO on the main process, WARNING on the others).
    Only that logger is touched: the caller's root handlers stay as they are."""
    logger = logging.getLogger("lorakit")
    if logger.level != logging.DEBUG:  # --debug (lorakit.errors.run_cli) keeps its level
        logger.setLevel(logging.INFO if is_main else logging.WARNING)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[lorakit] %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


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


def arguments(resolved: Resolved):
    """The run's TrainingArguments, the checkpoint to resume from (None for a fresh run) and the notes on the
    hardware decisions. An output folder holding another run is refused here, before anything loads.

    A run that overwrites another trains beside it (fileio.next_folder) and takes its place only when complete
    (`save`), so the old run stays whole until then; resuming such a run finds its checkpoints there."""
    from transformers import TrainingArguments

    kwargs, notes = training_arguments(resolved)
    output_dir = Path(kwargs["output_dir"])
    resume = _resume_path(resolved, output_dir)
    work = output_dir
    if resume is not None and Path(resume).parent == next_folder(output_dir):
        work = next_folder(output_dir)
    elif not resolved.recipe.dry_run:
        check_output_dir(output_dir, overwrite=resolved.recipe.overwrite_output_dir, resuming=resume is not None)
        if resume is None and holds_run(output_dir):
            shutil.rmtree(next_folder(output_dir), ignore_errors=True)  # an unfinished replacement, not resumed
            work = next_folder(output_dir)
    kwargs["output_dir"] = str(work)
    try:
        args = TrainingArguments(**kwargs)
    except (ValueError, TypeError) as err:
        raise UsageError(f"invalid training arguments: {err}") from None
    return args, resume, notes


def _resume_path(resolved: Resolved, output_dir: Path) -> str | None:
    value = resolved.training.get("resume_from_checkpoint")
    if not value:
        return None
    if value == "latest":
        last = last_complete_checkpoint(next_folder(output_dir)) or last_complete_checkpoint(output_dir)
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


def log_resolution(resolved: Resolved, args, config, model, task_data, params: modeling.ParamReport,
                   notes: list[str]) -> None:
    """One block at the start of the log: recipe, model and method, data, device and precision, parameters."""
    recipe = resolved.recipe
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
    log.info("problem type: %s%s", recipe.problem_type,
             f"; class weights {task_data.class_weights}" if task_data.class_weights else "")
    log.info("device: %s x %d process(es); precision: %s; batch %d per device, %d effective",
             hardware.device_name(), args.world_size,
             hardware.precision_label({"bf16": args.bf16, "fp16": args.fp16, "tf32": args.tf32},
                                      tf32_requested=bool(resolved.training.get("tf32"))),
             args.per_device_train_batch_size,
             args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps)
    log.info("C allocator: %s", allocator.describe())
    for line in notes + params.lines():
        log.info(line)
    if recipe.head_learning_rate is not None:
        log.info("head (%s): %s trainable weights at learning rate %g; the rest at %g",
                 ", ".join(modeling.head_modules(recipe, config)), f"{modeling.head_weights(recipe, config, model):,}",
                 recipe.head_learning_rate, args.learning_rate)
    if recipe.loraplus_lr_ratio is not None:
        log.info("LoRA+: LoRA's B matrices at %g x learning rate %g = %g", recipe.loraplus_lr_ratio,
                 args.learning_rate, recipe.loraplus_lr_ratio * args.learning_rate)
    if recipe.dry_run:
        log.info("dry run: nothing trained or written")


def prepare_step(model: torch.nn.Module, recipe: Recipe, half: torch.dtype | None, device_type: str, *,
                 sharded: bool = False) -> list[str]:
    """What training does to the built model for a faster step (also what experiments/step_time.py times):
    frozen linear weights stored in the half dtype under LoRA, and on CPU the kit's dropout and attention
    (lorakit.cpu). Returns the log lines saying what changed."""
    lines = []
    # Sharding engines want one dtype per flat parameter group; quantised layers are not nn.Linear anyway.
    if half is not None and recipe.method == "lora" and not sharded:
        stored = modeling.store_frozen_linears(model, half)
        lines.append(f"frozen linear layers kept in {half} (autocast would cast them at every step): {stored}")
    if recipe.fast_dropout and device_type == "cpu":
        from . import cpu

        lines += cpu.speed_up(model)
    return lines


def speed_up(model: torch.nn.Module, recipe: Recipe, args) -> None:
    """`prepare_step` for this run's TrainingArguments, its lines logged."""
    half = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
    for line in prepare_step(model, recipe, half, args.device.type, sharded=bool(args.fsdp or args.deepspeed)):
        log.info(line)


def prepare_for_trainer(model: torch.nn.Module) -> torch.nn.Module:
    """The classifiers' loss is a per-batch mean that ignores num_items_in_batch. Told otherwise, Trainer would
    multiply it by the number of processes (train and eval loss doubled under 2-process DDP) and not divide it by
    gradient_accumulation_steps (gradients that many times too large)."""
    (model.get_base_model() if modeling.is_peft(model) else model).accepts_loss_kwargs = False
    return model


def final_metrics(trainer, train_output, params: modeling.ParamReport, recipe: Recipe, resume: str | None,
                  task_data) -> dict:
    """metrics.json's content: the final evaluation, the best one, the parameter counts, the rows scored and the
    training time and loss, for the whole run when it was resumed (TrainClock)."""
    final_eval = logged_final_evaluation(trainer)
    if final_eval is None:
        final_eval = trainer.evaluate()
    else:
        log.info("final evaluation: the one logged at step %d (same weights, same rows)", final_eval["step"])
    metrics = report.summarize(trainer.state.log_history, final_eval, train_output, params.as_dict(),
                               recipe.headline_metric)
    metrics["scored_rows"] = len(task_data.eval)
    metrics["scored_split_rows"] = task_data.eval_split_rows or len(task_data.eval)
    if task_data.test is not None:
        metrics["test_split_rows"] = task_data.test_split_rows
    clock = trainer.train_clock()
    if resume and clock:
        metrics.update(clock.whole_run(train_output.metrics, trainer.state.max_steps,
                                       _schedule_samples(trainer.args, len(task_data.train))))
    return metrics


def logged_final_evaluation(trainer) -> dict | None:
    """The evaluation already in the log of the weights training ended with, or None: the last one when it is of
    the last step, or with load_best_model_at_end the best checkpoint's. Evaluating again would score the same
    rows with the same weights."""
    state = trainer.state
    evals = [e for e in state.log_history if "eval_loss" in e]
    if not evals:
        return None
    if trainer.args.load_best_model_at_end and state.best_model_checkpoint:
        best = re.search(r"checkpoint-(\d+)$", state.best_model_checkpoint)
        step = int(best.group(1)) if best else None
    else:
        step = state.global_step
    found = [e for e in evals if e.get("step") == step]
    return found[-1] if found else None


def _schedule_samples(args, train_rows: int) -> float:
    """Samples in the whole schedule, counted as Trainer counts them for train_samples_per_second."""
    if args.max_steps > 0:
        return args.max_steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    return train_rows * args.num_train_epochs


def compute_metrics(recipe: Recipe, task_data):
    """The Trainer's `compute_metrics` for the recipe's metrics (lorakit.metrics)."""
    from .metrics import trainer_metrics

    return trainer_metrics(recipe.metrics, task_data.problem_type, pos_label=task_data.pos_label,
                           threshold=task_data.threshold)


def save(trainer, tokenizer, resolved: Resolved, label_names: list[str], metrics: dict, tested=None,
         initial_lora: dict | None = None) -> None:
    """Save the run folder on the main process (`save_run`); every process joins the gathering of sharded
    weights (under FSDP and DeepSpeed ZeRO-3 that is a collective) and waits for the save."""
    state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.is_world_process_zero():
        work = Path(trainer.args.output_dir)
        output_dir = final_folder(work)
        save_run(trainer, tokenizer, resolved, label_names, metrics, work, state_dict=state_dict, tested=tested,
                 initial_lora=initial_lora)
        if work != output_dir:
            swap_in(work, output_dir)
        headline = resolved.recipe.headline_metric
        log.info("saved adapter and metrics to %s: eval %s = %.4f%s", output_dir, headline,
                 metrics.get(f"eval_{headline}", float("nan")),
                 f", test {headline} = {metrics[f'test_{headline}']:.4f}" if f"test_{headline}" in metrics else "")
    trainer.accelerator.wait_for_everyone()


def save_run(trainer, tokenizer, resolved: Resolved, label_names: list[str], metrics: dict,
             output_dir: Path, state_dict: dict | None = None, tested=None,
             initial_lora: dict | None = None) -> None:
    """Write the adapter (head included), tokenizer, labels, recipe, metrics, log and plot, all or nothing; and
    the test split's predictions, report and plot when the run scored one (`tested`, an evaluation.Scored).
    `state_dict` is the model's full state gathered across processes when the weights are sharded;
    `initial_lora` (modeling.initial_lora) converts a PiSSA/OLoRA adapter to plain LoRA for the unchanged base."""
    recipe = resolved.recipe
    history = trainer.state.log_history
    with staged_folder(output_dir, last=METRICS_FILE) as stage:
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(stage, state_dict=state_dict)
        (stage / CARD_FILE).unlink(missing_ok=True)  # PEFT's empty template; the kit's card is written below
        if initial_lora is not None:
            modeling.convert_to_plain_lora(stage, initial_lora)
        tokenizer.save_pretrained(stage)
        write_labels(stage, labels.label_info(recipe, label_names))
        model = trainer.accelerator.unwrap_model(trainer.model)
        values = resolved_values(resolved, model.config)
        (stage / RECIPE_FILE).write_text(yaml.safe_dump(values, sort_keys=False))
        write_json_atomic(stage / LOG_FILE, history)
        report.plot_learning_curve(history, recipe.headline_metric, stage / CURVE_FILE,
                                   title=f"{recipe.task_name or 'run'}: {recipe.method} on "
                                         f"{Path(recipe.model_name_or_path).name}")
        if tested is not None:
            from .evaluation import write_files

            write_files(stage, tested)
        write_json_atomic(stage / METRICS_FILE, metrics)
        run = Run(folder=stage, recipe=values, metrics=metrics, labels=json.loads((stage / LABELS_FILE).read_text()),
                  is_adapter=recipe.method == "lora")
        build_card(run, values["hub_model_id"]).save(stage / CARD_FILE)


def resolved_values(resolved: Resolved, config) -> dict:
    """recipe.yaml: every key of the run as it was used, defaults filled in from the model's architecture (LoRA
    targets, modules trained in full) and the Hub repo name, so that `--config recipe.yaml` trains the same run."""
    values = resolved.as_dict()
    if resolved.recipe.method == "lora":
        values["lora_target_modules"] = modeling.target_modules(resolved.recipe, config)
        values["lora_modules_to_save"] = modeling.modules_to_save(resolved.recipe, config)
    values["hub_model_id"] = hub_model_id(resolved)
    return values
