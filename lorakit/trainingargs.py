"""TrainingArguments keys without importing transformers.TrainingArguments (which loads torch, 5-8 s): the field
names of the pinned transformers, the kit's defaults under the recipe, and the keys `train.py --help` shows.

tests/test_help.py checks the names and defaults against the installed TrainingArguments, so a transformers
upgrade that adds, drops or re-defaults a field fails loudly there.
"""

from __future__ import annotations

DOCS_URL = "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments"

# Every init field of transformers 5.23.0's TrainingArguments, in its order.
FIELDS = (
    "output_dir", "per_device_train_batch_size", "num_train_epochs", "max_steps", "learning_rate",
    "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "optim", "optim_args", "weight_decay", "adam_beta1",
    "adam_beta2", "adam_epsilon", "optim_target_modules", "gradient_accumulation_steps",
    "average_tokens_across_devices", "max_grad_norm", "label_smoothing_factor", "bf16", "fp16", "bf16_full_eval",
    "fp16_full_eval", "tf32", "activation_checkpointing", "activation_checkpointing_kwargs",
    "gradient_checkpointing", "gradient_checkpointing_kwargs", "torch_compile", "torch_compile_backend",
    "torch_compile_mode", "use_liger_kernel", "liger_kernel_config", "use_cache", "neftune_noise_alpha",
    "torch_empty_cache_steps", "auto_find_batch_size", "logging_strategy", "logging_steps", "logging_first_step",
    "log_on_each_node", "logging_nan_inf_filter", "include_num_input_tokens_seen", "log_level", "log_level_replica",
    "disable_tqdm", "report_to", "run_name", "project", "trackio_space_id", "trackio_bucket_id",
    "trackio_static_space_id", "eval_strategy", "eval_steps", "eval_delay", "per_device_eval_batch_size",
    "prediction_loss_only", "eval_on_start", "eval_do_concat_batches", "eval_use_gather_object",
    "eval_accumulation_steps", "include_for_metrics", "batch_eval_metrics", "save_only_model", "save_strategy",
    "save_steps", "save_on_each_node", "save_total_limit", "enable_jit_checkpoint", "push_to_hub", "hub_token",
    "hub_private_repo", "hub_model_id", "hub_strategy", "hub_always_push", "hub_revision", "load_best_model_at_end",
    "metric_for_best_model", "greater_is_better", "ignore_data_skip", "restore_callback_states_from_checkpoint",
    "full_determinism", "seed", "data_seed", "use_cpu", "accelerator_config", "parallelism_config",
    "dataloader_drop_last", "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers",
    "dataloader_prefetch_factor", "dataloader_multiprocessing_context", "dataloader_in_order",
    "remove_unused_columns", "label_names", "train_sampling_strategy", "length_column_name",
    "ddp_find_unused_parameters", "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "ddp_static_graph", "ddp_backend",
    "ddp_timeout", "fsdp", "fsdp_config", "deepspeed", "debug", "skip_memory_metrics", "do_train", "do_eval",
    "do_predict", "resume_from_checkpoint", "local_rank",
)

# Kit defaults under the recipe: TrainingArguments values that suit every task unless a recipe says otherwise.
KIT_DEFAULTS = {
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

# The TrainingArguments keys `--help` lists (those the shipped recipes set, and the kit's defaults): group,
# TrainingArguments' own default, one line. The rest pass through as well; DOCS_URL lists them.
SHOWN = {
    "output_dir": ("training", None, "Folder of the run (default: outputs/<task_name>)."),
    "learning_rate": ("training", 5e-05, "Peak learning rate of AdamW."),
    "num_train_epochs": ("training", 3.0, "Passes over the training rows."),
    "max_steps": ("training", -1, "Train this many optimizer steps instead (overrides num_train_epochs)."),
    "per_device_train_batch_size": ("training", 8, "Training rows per batch and device."),
    "per_device_eval_batch_size": ("training", 8, "Evaluation rows per batch and device."),
    "gradient_accumulation_steps": ("training", 1, "Batches summed into one optimizer step."),
    "warmup_steps": ("training", 0, "Linear warmup steps; a ratio of the total steps when below 1."),
    "lr_scheduler_type": ("training", "linear", "Learning rate schedule after warmup (linear, cosine, ...)."),
    "weight_decay": ("training", 0.0, "AdamW weight decay (not on biases and LayerNorm)."),
    "optim": ("training", "adamw_torch_fused", "Optimizer."),
    "seed": ("training", 42, "Seed of the model's head, dropout and data order."),
    "eval_strategy": ("training", "no", "When to evaluate: no, steps or epoch."),
    "eval_steps": ("training", None, "Steps between evaluations when eval_strategy is steps."),
    "save_strategy": ("training", "steps", "When to save a checkpoint: no, steps, epoch or best."),
    "save_steps": ("training", 500, "Steps between checkpoints when save_strategy is steps."),
    "save_total_limit": ("training", None, "Checkpoints kept (the best one is kept too)."),
    "load_best_model_at_end": ("training", False, "Finish with the checkpoint of the best evaluation."),
    "metric_for_best_model": ("training", None, "Metric that picks the best checkpoint (default: the headline)."),
    "logging_strategy": ("training", "steps", "When to log the training loss: no, steps or epoch."),
    "logging_steps": ("training", 500, "Steps between log lines when logging_strategy is steps."),
    "train_sampling_strategy": ("training", "random", "Batch order: random, or group_by_length (less padding)."),
    "dataloader_num_workers": ("training", 0, "Worker processes loading batches."),
    "report_to": ("training", "none", "Experiment trackers to log to (wandb, tensorboard, ...)."),
    "bf16": ("training", False, "bf16 autocast (default: where the device computes bf16 natively)."),
    "fp16": ("training", False, "fp16 autocast."),
    "tf32": ("training", None, "TF32 matmuls (default: on Ampere and newer GPUs)."),
    "activation_checkpointing": ("training", None, "Recompute activations in backward to save memory (slower)."),
    "resume_from_checkpoint": ("training", None, "A checkpoint-N folder, or latest, to continue from."),
    "push_to_hub": ("Hub", False, "Push the adapter and its model card to hub_model_id after training."),
    "hub_model_id": ("Hub", None, "Hub repo, user/name (default: <backbone>-<method>-<task_name>)."),
}
