"""FastDropout (lorakit/cpu/dropout.py): torch's dropout in distribution, with a cheaper mask; swapped in on CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import run_script, train_quick_sst2
from lorakit.cpu.dropout import LEVELS, FastDropout, keep_mask, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_and_expectation(p):
    torch.manual_seed(0)
    n = 400_000
    mask = keep_mask(torch.Size([n]), p)
    keep = 1 - round(p * LEVELS) / LEVELS
    assert mask.dtype == torch.bool and mask.shape == (n,)
    assert abs(mask.float().mean().item() - keep) < 4 * (keep * (1 - keep) / n) ** 0.5  # 4 standard errors
    x = torch.ones(n)
    out = FastDropout(p)(x)
    values = out.unique()  # kept values scaled by the rounded keep rate's inverse (in float32)
    assert values[0] == 0 and len(values) == 2 and values[1].item() == pytest.approx(1 / keep, rel=1e-7)
    assert abs(out.mean().item() - 1) < 4 * ((1 - keep) / keep / n) ** 0.5


def test_masks_of_neighbouring_elements_are_independent():
    # Four elements share a 64-bit draw: their quarters must not be correlated.
    torch.manual_seed(1)
    mask = keep_mask(torch.Size([200_000, 4]), 0.5).float()
    corr = torch.corrcoef(mask.T)
    assert (corr - torch.eye(4)).abs().max() < 0.02


def test_gradient_is_the_forward_mask_times_the_scale():
    torch.manual_seed(2)
    x = torch.randn(64, 48, requires_grad=True)
    drop = FastDropout(0.3)
    out = drop(x)
    out.sum().backward()
    kept = out.detach() != 0
    scale = LEVELS / (LEVELS - round(0.3 * LEVELS))
    assert torch.equal(x.grad, kept.float() * scale)
    assert torch.allclose(out.detach()[kept], x.detach()[kept] * scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_every_float_width_keeps_exactly_the_scaled_input(dtype):
    # The mask is applied to the elements' bits (AND with 0 or all ones), so it must match the multiply exactly.
    torch.manual_seed(4)
    x = torch.randn(33, 40, dtype=dtype)
    specials = torch.tensor([float("nan"), float("-inf"), -0.0, -1.0], dtype=dtype)
    x[0, :4] = x[0, 10:14] = specials  # with seed 5: NaN, -inf, -1 kept at 0-3; NaN dropped at 10
    x.requires_grad_()
    torch.manual_seed(5)
    out = FastDropout(0.25)(x)
    torch.manual_seed(5)
    kept = keep_mask(x.shape, 0.25)  # the same draw
    grad = torch.randn_like(out)
    out.backward(grad)
    scale = LEVELS / (LEVELS - round(0.25 * LEVELS))
    zero = torch.zeros((), dtype=dtype)
    assert out.dtype == dtype and 0.65 < kept.float().mean().item() < 0.85 and kept[0, :4].sum() == 3 and not kept[0, 10]
    exact = dict(rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(out.detach(), torch.where(kept, x.detach() * scale, zero), **exact)
    dropped = out.detach()[~kept]
    assert torch.equal(dropped, torch.zeros_like(dropped)) and not dropped.signbit().any()  # +0, NaN/inf too
    assert torch.equal(x.grad, torch.where(kept, grad * scale, zero))


def test_eval_mode_zero_p_and_seeds():
    x = torch.randn(8, 16, dtype=torch.bfloat16)
    assert FastDropout(0.1).eval()(x) is x and FastDropout(0.0)(x) is x
    assert torch.equal(FastDropout(1.0)(x), torch.zeros_like(x))
    torch.manual_seed(3)
    a = FastDropout(0.1)(x)
    torch.manual_seed(3)
    assert torch.equal(a, FastDropout(0.1)(x)) and a.dtype == torch.bfloat16  # set_seed makes runs repeat


def test_use_fast_dropout_swaps_every_dropout_lora_included(tiny_models):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_models["bert"], num_labels=2)
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, lora_dropout=0.2,
                                             target_modules=["query", "value"]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dropouts = [m for m in model.modules() if type(m) is nn.Dropout and m.p > 0]
    model.eval()
    assert use_fast_dropout(model) == len(dropouts) > 0
    assert not any(type(m) is nn.Dropout and m.p > 0 for m in model.modules())
    lora = [m for n, m in model.named_modules() if n.endswith("lora_dropout.default")]
    assert lora and all(isinstance(m, FastDropout) and m.p == 0.2 and not m.training for m in lora)
    assert model.state_dict().keys() == before.keys()  # no weights added or renamed: adapters save as before


def test_training_on_cpu_uses_it_and_the_key_turns_it_off(tiny_roberta, tmp_path):
    lines = ("dropout layers drawing their masks four elements per random word (CPU; fast_dropout)",
             "attention: SDPA with the probabilities' dropout drawn the same way")  # lorakit.cpu.attention
    fast = train_quick_sst2(tiny_roberta, tmp_path / "fast").stderr
    torch_dropout = train_quick_sst2(tiny_roberta, tmp_path / "torch", "--fast_dropout", "false").stderr
    assert all(line in fast and line not in torch_dropout for line in lines)
    assert all((tmp_path / out / "adapter_model.safetensors").is_file() for out in ("fast", "torch"))


def test_bad_value_is_a_one_line_error(tiny_roberta, tmp_path):
    proc = run_script("train.py", "--task", "sst2", "--model_name_or_path", str(tiny_roberta),
                      "--fast_dropout", "sometimes", "--output_dir", str(tmp_path / "out"), "--dry_run")
    assert proc.returncode == 2 and "fast_dropout" in proc.stderr and not (tmp_path / "out").exists()
