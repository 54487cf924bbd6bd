"""The kit's Trainer: transformers.Trainer with a head learning rate, LoRA+ groups, a seeded length-grouped
sampler, and a clock that keeps a resumed run's time and loss whole."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState, ProgressCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from . import modeling


class TrainClock(TrainerCallback, ExportableState):
    """Training seconds and the loss summed over a run's segments. Trainer's train_runtime and train_loss cover
    only the segment since the last resume; this callback's state goes into every checkpoint's
    trainer_state.json (Trainer saves any ExportableState callback's), so a resumed run adds what came before
    its checkpoint. KitTrainer hands it the segment's loss sum (private to Trainer) just before each save."""

    def __init__(self, seconds: float = 0.0, segments: int = 0, loss_sum: float | None = 0.0, steps: int = 0):
        self.seconds, self.segments, self.loss_sum, self.steps = seconds, segments, loss_sum, steps
        self._start, self.segment_loss_sum, self._step = None, 0.0, steps

    @classmethod
    def resumed_from(cls, checkpoint: str | None) -> TrainClock | None:
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


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """A length-grouped sampler that shuffles from its own generator, seeded by (seed, epoch).

    transformers' LengthGroupedSampler draws from the global RNG. Each rank seeds that RNG differently (its own
    dropout masks), so under DDP the ranks would cut their shards from different permutations (samples seen
    twice, others never); and a run resumed mid-epoch would re-draw that epoch's order from a different RNG state
    than the uninterrupted run had. Trainer and accelerate call set_epoch on the sampler before every epoch.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class NumbersProgress(ProgressCallback):
    """Trainer's progress bars, with each log entry written as `step N: loss 0.6931, learning_rate 0.0005, ...`
    (numbers to 4 significant digits) instead of the printed dict of strings."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            shown = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()
                     if k != "total_flos"]
            self.training_bar.write(f"step {state.global_step}: {', '.join(shown)}")


class KitTrainer(Trainer):
    """Trainer with the head (`head_modules`) at `head_learning_rate` and LoRA's B matrices at
    `loraplus_lr_ratio` times the learning rate, the epoch-seeded sampler, and the TrainClock fed at each save."""

    def __init__(self, *args, head_learning_rate: float | None = None, head_modules: list[str] | None = None,
                 loraplus_lr_ratio: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.pop_callback(ProgressCallback):  # the same bars, with log lines of numbers (NumbersProgress)
            self.add_callback(NumbersProgress)
        self.head_learning_rate = head_learning_rate
        self.head_modules = list(head_modules or [])
        self.loraplus_lr_ratio = loraplus_lr_ratio

    def train_clock(self) -> TrainClock | None:
        """The run's TrainClock among the callbacks (Trainer may have swapped in its own restored copy), or None."""
        return next((cb for cb in self.callback_handler.callbacks if isinstance(cb, TrainClock)), None)

    def _save_checkpoint(self, model, trial):
        if clock := self.train_clock():  # the loss this segment has summed, logged or not, for the clock's state
            clock.segment_loss_sum = self._total_loss_scalar + self._tr_loss.item()
        super()._save_checkpoint(model, trial)

    def create_optimizer(self, model=None):
        """Trainer's optimizer (its weight-decay groups, the recipe's optim), with the head's parameters moved to
        groups of their own at head_learning_rate and LoRA's B matrices to groups at loraplus_lr_ratio times
        their rate; the scheduler then scales every group alike. The groups come out in the same order every
        time, so a checkpoint's optimizer state loads back into them.

        PEFT's `create_loraplus_optimizer` is not used: it puts every 1-D parameter (the head's biases, LayerNorm)
        at the B rate and drops Trainer's weight decay (tests/test_head.py::test_peft_loraplus_groups_differ)."""
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
