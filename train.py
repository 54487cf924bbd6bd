"""Train a LoRA text classifier from a recipe.

    accelerate launch train.py --task agnews            # configs/agnews.yaml, Hub model and data
    python train.py --task sst2 --model_name_or_path ./my-model --dataset_name ../shared/data/glue
    python train.py --config my_recipe.yaml --learning_rate 3e-4 --dry_run

Any recipe key can be overridden as --key value; `python train.py --help` lists them.
"""

import sys

from lorakit.cpu import allocator
from lorakit.errors import run_cli
from lorakit.recipe import Resolved, parse_recipe
from lorakit.recipe_help import help_text, wants_help


def train(resolved: Resolved, callbacks: tuple = ()) -> dict | None:
    """One run of a resolved recipe, top to bottom; returns its metrics (None for a dry run). `callbacks`
    (transformers.TrainerCallback) go to the Trainer: the benchmark times steps with one."""
    from transformers import set_seed

    from lorakit import data, evaluation, hub, labels, modeling, plan, training, warmstart
    from lorakit.loss import weighted_loss
    from lorakit.trainer import KitTrainer, TrainClock

    recipe = resolved.recipe
    # 1. Arguments: kit defaults < recipe < command line, then what this hardware supports; where to resume.
    args, resume, notes = training.arguments(resolved)
    stopping = evaluation.early_stopping(recipe, args)  # [] or EarlyStoppingCallback (early_stopping_patience)

    # 2. Seed and logging.
    training.setup_logging(args.process_index == 0)
    set_seed(args.seed)

    # 3. Data (validation carved from train with validation_split_percentage, the same rows on a resume), and
    # 4. the model with LoRA (its budget and targets checked on a weightless copy first), warm-started from
    # init_adapter if the recipe names one.
    hub.check_reachable(recipe)  # a Hub id with no Hub: one line now, not a minute of retries
    with args.main_process_first(desc="loading data"):
        task_data = data.load_task_data(recipe, seed=args.seed,
                                        validation_rows=evaluation.saved_validation_rows(resume))
        config, model, params = modeling.prepare(recipe, task_data.label_names, load_weights=not recipe.dry_run)
        warmstart.init(recipe, model, task_data.label_names)
    training.log_resolution(resolved, args, config, model, task_data, params, notes)
    resolved = labels.with_class_weights(resolved, task_data.class_weights)  # `balanced` saved as its numbers
    if recipe.dry_run:
        plan.log_plan(recipe, args, config, task_data)  # steps, and the time a few timed steps predict
        return None
    training.speed_up(model, recipe, args)  # frozen linears in bf16; on CPU, lorakit.cpu's dropout and attention

    evaluation.save_validation_rows(task_data, args)  # beside the checkpoints, for a resume

    # 5. Tokenizer and the tokenised splits (cached by datasets).
    tokenizer = modeling.load_tokenizer(recipe)
    modeling.use_pad_token(model, tokenizer)  # decoder LLMs find each row's last token by the pad token id
    with args.main_process_first(desc="tokenising"):
        tokenized = data.tokenize(task_data, tokenizer, recipe)

    # 6. Trainer.
    clock = TrainClock.resumed_from(resume)  # None: resumed from a checkpoint older than the clock
    trainer = KitTrainer(
        model=training.prepare_for_trainer(model), args=args, train_dataset=tokenized.train,
        eval_dataset=tokenized.eval, processing_class=tokenizer, data_collator=data.PaddingCollator(tokenizer),
        compute_metrics=training.compute_metrics(recipe, task_data),
        callbacks=[*callbacks, *filter(None, [clock]), *stopping],
        compute_loss_func=weighted_loss(task_data.problem_type, task_data.class_weights),  # None: the model's loss
        head_learning_rate=recipe.head_learning_rate, head_modules=modeling.head_modules(recipe, config),
        loraplus_lr_ratio=recipe.loraplus_lr_ratio)

    # 7. Train, resuming where asked. The model was built alike on every process (same seed); from here each rank
    # draws its own dropout masks, while accelerate keeps the data order in step.
    set_seed(args.seed + args.process_index)
    initial = modeling.initial_lora(recipe, model)  # PiSSA/OLoRA: LoRA's start, to save it for the unchanged base
    train_output = trainer.train(resume_from_checkpoint=resume)

    # 8. Evaluate; then score the test split once, with the kept checkpoint (it never chose the checkpoint).
    metrics = training.final_metrics(trainer, train_output, params, recipe, resume, tokenized)
    metrics.update(evaluation.stopping_summary(trainer.state, args))
    tested = evaluation.test_step(trainer, tokenized, task_data, recipe)
    metrics.update(tested.metrics if tested else {})

    # 9. Save the run folder (adapter, tokenizer, labels, recipe, metrics, curve; the test step's files).
    training.save(trainer, tokenizer, resolved, task_data.label_names, metrics, tested, initial_lora=initial)
    return metrics


def main(argv: list[str]) -> int:
    if wants_help(argv):  # before anything heavy: the help reads the recipe dataclass and a committed key list
        print(help_text(argv))
        return 0
    resolved = parse_recipe(argv)
    if resolved.sweeps:
        from lorakit.sweep import run_sweep

        return run_sweep(resolved, train)
    push = bool(resolved.training.get("push_to_hub"))
    if push:
        from lorakit.hub import check_push

        check_push(resolved)  # no token or repo id: fail now, not after training
    metrics = train(resolved)
    # 10. Push the small adapter, with the kit's model card.
    if metrics is not None and push:
        from lorakit.hub import push_run

        push_run(resolved)
    return 0


if __name__ == "__main__":
    allocator.reexec()  # with LORAKIT_ALLOCATOR=mimalloc, before torch loads: LD_PRELOAD only takes at process start
    sys.exit(run_cli(main))
