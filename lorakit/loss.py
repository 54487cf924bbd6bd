"""Weighted losses for imbalanced labels, as a `compute_loss_func` for transformers.Trainer.

Without class weights the models compute their own loss from config.problem_type (cross-entropy, BCE with
logits, MSE), and none of this runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .runfolder import MULTI_LABEL


def weighted_loss(problem_type: str, weights: list[float] | None):
    """Trainer's `compute_loss_func(outputs, labels, num_items_in_batch)` for `weights`, or None without them.

    Single-label: cross-entropy with per-class `weight`; multi-label: BCE with logits with per-label
    `pos_weight`. Called without num_items_in_batch (evaluation, a single batch) it is torch's own mean
    (F.cross_entropy(..., weight=w) divides by the weights' sum). In training Trainer passes the number of labels
    in the whole accumulated batch on every process, and treats the loss as already scaled for gradient
    accumulation and data parallelism: so the summed loss is divided by that number, as transformers' own loss
    functions do. With `balanced` weights the mean weight over the train split is 1, so both agree in expectation.
    """
    if not weights:
        return None
    table = torch.tensor(weights, dtype=torch.float32)

    def compute_loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        logits = logits.float()
        w = table.to(logits.device)
        reduction = "mean" if num_items_in_batch is None else "sum"
        if problem_type == MULTI_LABEL:
            loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), pos_weight=w,
                                                      reduction=reduction)
        else:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), weight=w, reduction=reduction)
        return loss if num_items_in_batch is None else loss / num_items_in_batch

    return compute_loss
