"""Class weights in the loss: the Trainer's compute_loss_func against torch's own weighted losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lorakit.loss import weighted_loss


def _batch():
    torch.manual_seed(0)
    return torch.randn(6, 3), torch.tensor([0, 2, 1, 1, 0, 2])


def test_weighted_cross_entropy_equals_torchs_on_a_fixed_batch():
    logits, labels = _batch()
    w = [0.5, 2.0, 1.25]
    loss = weighted_loss("single_label_classification", w)({"logits": logits}, labels)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels, weight=torch.tensor(w)).item(), rel=1e-6)
    assert loss.item() != pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-3)  # the weights matter


def test_in_training_the_summed_loss_is_divided_by_trainers_item_count():
    logits, labels = _batch()
    w = torch.tensor([0.5, 2.0, 1.25])
    loss = weighted_loss("single_label_classification", w.tolist())({"logits": logits}, labels, num_items_in_batch=12)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels, weight=w, reduction="sum").item() / 12)


def test_multi_label_pos_weight_equals_torchs_bce():
    torch.manual_seed(1)
    logits = torch.randn(4, 3)
    targets = torch.tensor([[1.0, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 1]])
    pos = [3.0, 0.5, 1.0]
    loss = weighted_loss("multi_label_classification", pos)((logits,), targets)
    expected = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=torch.tensor(pos))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_no_weights_no_loss_function():
    assert weighted_loss("single_label_classification", None) is None
