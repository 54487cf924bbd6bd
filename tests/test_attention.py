"""lorakit.cpu.attention: the same attention as SDPA, its probabilities dropped by FastDropout's masks on CPU."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForSequenceClassification
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from lorakit.cpu import attention
from lorakit.cpu.dropout import LEVELS

FLASH = "aten::_scaled_dot_product_flash_attention_for_cpu"


def encoder_module(training: bool = True, is_causal: bool = False):
    return SimpleNamespace(training=training, is_causal=is_causal)


def qkv(length: int = 12, heads: int = 2, size: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(3, heads, length, size, generator=gen, requires_grad=True) for _ in range(3)]


def test_training_path_without_drops_is_sdpa_for_both_mask_formats():
    q, k, v = qkv()
    keep = torch.ones(3, 1, 12, 12, dtype=torch.bool)
    keep[0, ..., 9:] = False  # the first row's last three tokens are padding
    additive = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2)
    for mask in (keep, additive, None):
        # p below 1/65536 rounds to no drop, but takes the kit's own path (dropout > 0 in training)
        out, weights = attention.cpu_attention(encoder_module(), q, k, v, mask, dropout=1e-9)
        reference = expected if mask is not None else \
            torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        assert weights is None and out.shape == (3, 12, 2, 8)
        torch.testing.assert_close(out, reference, atol=1e-6, rtol=1e-5)


def test_probabilities_are_dropped_and_rescaled():
    # With value = identity the output is the (dropped) attention probabilities themselves.
    length, p = 64, 0.25
    q, k, _ = qkv(length=length, heads=4, size=length)
    v = torch.eye(length).expand(3, 4, length, length)
    probs = torch.softmax(q @ k.transpose(2, 3) / length ** 0.5, dim=-1).transpose(1, 2)
    torch.manual_seed(0)
    out, _ = attention.cpu_attention(encoder_module(), q, k, v, None, dropout=p)
    kept = out != 0
    scale = LEVELS / (LEVELS - round(p * LEVELS))
    assert abs(kept.float().mean().item() - (1 - p)) < 4 * (p * (1 - p) / kept.numel()) ** 0.5
    torch.testing.assert_close(out[kept], (probs * scale)[kept])
    torch.manual_seed(0)
    again, _ = attention.cpu_attention(encoder_module(), q, k, v, None, dropout=p)
    assert torch.equal(out, again)  # seeded like the rest of training
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def attention_ops(module, length: int, dropout: float) -> set[str]:
    q, k, v = qkv(length=length)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        attention.cpu_attention(module, q, k, v, None, dropout=dropout)
    return {e.key for e in prof.key_averages()}


def test_without_dropout_short_rows_train_on_the_math_kernel():
    short, long = attention.MATH_KERNEL_MAX_TOKENS, attention.MATH_KERNEL_MAX_TOKENS + 8
    assert FLASH not in attention_ops(encoder_module(), short, 0.0)
    assert FLASH in attention_ops(encoder_module(), long, 0.0)  # flash's backward wins on long rows
    assert FLASH in attention_ops(encoder_module(training=False), short, 0.0)  # evaluation keeps SDPA's choice


@pytest.mark.parametrize("module", [encoder_module(is_causal=True), SimpleNamespace(training=True)],
                         ids=["causal", "no is_causal attribute"])
def test_what_it_does_not_cover_goes_to_sdpa(module):
    q, k, v = qkv()
    torch.manual_seed(0)
    out, _ = attention.cpu_attention(module, q, k, v, None, dropout=0.3)
    torch.manual_seed(0)
    expected, _ = sdpa_attention_forward(module, q, k, v, None, dropout=0.3)
    assert torch.equal(out, expected)


def test_a_model_switched_to_it_computes_and_saves_as_with_sdpa(tiny_models, tmp_path):
    folder = tiny_models["bert"]
    sdpa = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, attn_implementation="sdpa")
    kit = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, attn_implementation="sdpa")
    kit.load_state_dict(sdpa.state_dict())
    assert attention.use_cpu_attention(kit) and not attention.use_cpu_attention(kit)  # once; then nothing to switch
    assert kit.config._attn_implementation == attention.NAME
    for model in (sdpa, kit):  # no dropout but the attention probabilities', where it rounds to no drop
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 1e-9 if name.endswith("attention.self.dropout") else 0.0
    x = torch.randint(5, 90, (2, 10))
    mask = torch.ones_like(x)
    mask[1, 7:] = 0
    for train in (True, False):
        sdpa.train(train), kit.train(train)
        torch.testing.assert_close(kit(input_ids=x, attention_mask=mask).logits,
                                   sdpa(input_ids=x, attention_mask=mask).logits, atol=1e-5, rtol=1e-4)
    kit.save_pretrained(tmp_path / "saved")
    assert attention.NAME not in (tmp_path / "saved" / "config.json").read_text()
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["model_type"] == "bert"

