"""QLoRA: 4-bit and 8-bit backbones with bitsandbytes on this CPU. The head and pooler stay fp32 nn.Linear and
trainable, the parameter report counts quantised weights as the weights they stand for, train.py trains and
saves an adapter that reloads to the same predictions, and merging goes through the dequantised weights."""

from __future__ import annotations

import json
import math

import bitsandbytes as bnb
import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification

from conftest import GLUE, QUICK, run_script
from lorakit import data as data_lib
from lorakit import modeling, quantization
from lorakit.errors import UsageError
from lorakit.inference import Classifier, export_merged
from lorakit.recipe import Recipe

QUANTISED = {4: bnb.nn.Linear4bit, 8: bnb.nn.Linear8bitLt}
LABELS = ["negative", "positive"]


def _recipe(model, bits: int | None, **kw) -> Recipe:
    return Recipe(model_name_or_path=str(model), dataset_name=str(GLUE), dataset_config_name="sst2",
                  load_in_4bit=bits == 4, load_in_8bit=bits == 8, **kw)


def _quantised_with_adapter(model_path, bits: int, adapter) -> torch.nn.Module:
    """The backbone loaded as train.py loads it for a `bits`-bit run, with the saved adapter on top."""
    recipe = _recipe(model_path, bits)
    config = modeling.load_config(recipe, LABELS)
    base = AutoModelForSequenceClassification.from_pretrained(
        str(model_path), config=config, dtype=torch.float32, **quantization.quantization_kwargs(recipe, config))
    return PeftModel.from_pretrained(quantization.prepare_quantized(base), str(adapter)).eval()


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("kind", ["roberta", "deberta-v2", "bert"])
def test_backbone_quantised_head_and_pooler_full_precision(tiny_models, kind, bits):
    recipe = _recipe(tiny_models[kind], bits)
    config = modeling.load_config(recipe, LABELS)
    model = modeling.build_model(recipe, config)
    linears = {name: m for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and ".lora_" not in name}
    kept = {name for name in linears if "classifier" in name or "pooler" in name}
    assert kept, "the tiny model has a head"
    for name, module in linears.items():
        if name in kept:
            assert type(module) is torch.nn.Linear and module.weight.dtype == torch.float32, name
        else:
            assert isinstance(module, QUANTISED[bits]), name
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # The head (and DeBERTa's pooler) train through PEFT's full-precision copies.
    for head in ["classifier", "pooler"] if kind == "deberta-v2" else ["classifier"]:
        assert any(f"{head}.modules_to_save.default." in n for n in trainable), (head, sorted(trainable))
    assert all(".lora_" in n or ".modules_to_save." in n for n in trainable), sorted(trainable)

    # Same parameter report as the unquantised LoRA model: 4-bit weights count as the weights they pack.
    plain = modeling.build_model(_recipe(tiny_models[kind], None), config)
    assert modeling.param_report(model) == modeling.param_report(plain)


@pytest.mark.parametrize("bits", [4, 8])
def test_deberta_trains_under_bf16_autocast(tiny_models, bits):
    # The kit trains with bf16 autocast where the hardware has it (this CPU does). DeBERTa fills the bf16
    # attention scores with its query's dtype minimum, so the quantised query_proj must return bf16 as
    # nn.Linear does under autocast; float32 there overflows.
    recipe = _recipe(tiny_models["deberta-v2"], bits)
    config = modeling.load_config(recipe, LABELS)
    model = modeling.build_model(recipe, config).train()
    x = torch.randint(5, config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(x)
    mask[:, 12:] = 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=x, attention_mask=mask, labels=torch.tensor([0, 1, 0, 1])).loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_quantisation_only_with_lora(tiny_roberta):
    recipe = _recipe(tiny_roberta, 4, method="full")
    with pytest.raises(UsageError, match="--load_in_4bit freezes the backbone.*--method lora"):
        quantization.quantization_kwargs(recipe, modeling.load_config(recipe, LABELS))


@pytest.fixture(scope="module", params=[4, 8], ids=["4bit", "8bit"])
def qlora_run(request, tiny_roberta, tmp_path_factory):
    bits = request.param
    out = tmp_path_factory.mktemp(f"qlora{bits}") / "run"
    # fp32 autocast off so that the reload below can recompute the run's own evaluation exactly.
    proc = run_script("train.py", "--task", "sst2", "--model_name_or_path", str(tiny_roberta),
                      "--dataset_name", str(GLUE), *QUICK, "--output_dir", str(out), f"--load_in_{bits}bit",
                      "--bf16", "false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return bits, out, proc


def test_qlora_trains_and_saves_a_small_adapter(qlora_run, tiny_roberta):
    bits, out, proc = qlora_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["eval_loss"])
    steps = [e for e in json.loads((out / "log_history.json").read_text()) if "loss" in e]
    assert len(steps) == 4 and all(math.isfinite(e["loss"]) for e in steps)  # 64 rows, batch 16
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = set(f.keys())
    # Only LoRA matrices and the fp32 head: no quantised backbone weights in the adapter.
    assert keys and all(".lora_" in k or ".classifier." in k for k in keys), sorted(keys)
    assert any(".classifier." in k for k in keys)
    assert f"load_in_{bits}bit: true" in (out / "recipe.yaml").read_text()


def _eval_loss(model, tiny_roberta) -> float:
    """The run's evaluation again: the same 32 rows, tokenised and padded alike, one batch."""
    from transformers import AutoTokenizer

    recipe = _recipe(tiny_roberta, None, max_eval_samples=32, max_train_samples=64, max_seq_length=64,
                     text_column_names=["sentence"], label_names=LABELS)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_roberta))
    task = data_lib.tokenize(data_lib.load_task_data(recipe), tokenizer, recipe)
    batch = data_lib.PaddingCollator(tokenizer)([task.eval[i] for i in range(len(task.eval))])
    with torch.no_grad():
        return model(**batch).loss.item()


def test_qlora_reloads_to_the_same_predictions(qlora_run, tiny_roberta):
    bits, out, _ = qlora_run
    metrics = json.loads((out / "metrics.json").read_text())
    model = _quantised_with_adapter(tiny_roberta, bits, out)
    assert _eval_loss(model, tiny_roberta) == pytest.approx(metrics["eval_loss"], abs=1e-5)


def test_qlora_merges_into_the_dequantised_weights(qlora_run, tiny_roberta):
    bits, out, _ = qlora_run
    if bits != 4:
        pytest.skip("8-bit rounding is too fine on this tiny model to tell the two merges apart")
    config = modeling.load_config(_recipe(tiny_roberta, 4), LABELS)
    x = torch.randint(5, config.vocab_size, (8, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        trained = _quantised_with_adapter(tiny_roberta, 4, out)(input_ids=x).logits
        base = quantization.load_dequantized(str(tiny_roberta), config, 4)
        assert not any(isinstance(m, QUANTISED[4]) for m in base.modules())
        merged = PeftModel.from_pretrained(base, str(out)).merge_and_unload().eval()(input_ids=x).logits
        plain_base = AutoModelForSequenceClassification.from_pretrained(str(tiny_roberta), config=config)
        into_original = PeftModel.from_pretrained(plain_base, str(out)).merge_and_unload().eval()(input_ids=x).logits
    # Merged into the weights it was trained against, the adapter predicts what was trained (bf16 matmuls in
    # the 4-bit layers aside); merged into the original weights, it does not.
    dequantised_gap = (merged - trained).abs().max().item()
    original_gap = (into_original - trained).abs().max().item()
    assert dequantised_gap < original_gap / 4, (dequantised_gap, original_gap)
    # infer.py and the merged export take the same road: the recipe beside the adapter says it was 4-bit.
    classifier = Classifier.load(str(out), precision="fp32")
    assert not any(isinstance(m, QUANTISED[4]) for m in classifier.model.modules())
    with torch.no_grad():
        served = classifier.model(input_ids=x).logits
    assert (served - merged).abs().max().item() < original_gap / 4


def test_merged_export_of_a_qlora_adapter_is_a_plain_fp32_model(qlora_run, tmp_path):
    bits, out, _ = qlora_run
    dest = export_merged(str(out), tmp_path / "merged")
    config = json.loads((dest / "config.json").read_text())
    assert "quantization_config" not in config
    model = AutoModelForSequenceClassification.from_pretrained(str(dest))
    assert not any(isinstance(m, QUANTISED[bits]) for m in model.modules())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
