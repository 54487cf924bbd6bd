"""QLoRA: 4-bit and 8-bit backbones with bitsandbytes on this CPU. The head and pooler stay fp32 nn.Linear and
trainable, the parameter report counts quantised weights as the weights they stand for, train.py trains and
saves an adapter that reloads to the same predictions, and merging goes through the dequantised weights. The
scratch LoRA layer (lorakit/adapters/) on a quantised backbone trains, merges and unmerges as PEFT's bnb layers do,
DoRA included."""

from __future__ import annotations

import json
import math

import bitsandbytes as bnb
import pytest
import torch
from peft import PeftModel
from peft.utils.integrations import dequantize_module_weight
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification

from lorakit import adapters
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
    config = modeling.load_config(_recipe(tiny_roberta, bits), LABELS)
    x = torch.randint(5, config.vocab_size, (8, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        trained = _quantised_with_adapter(tiny_roberta, bits, out)(input_ids=x).logits
        base = AutoModelForSequenceClassification.from_pretrained(
            str(tiny_roberta), config=config, dtype=torch.float32, use_safetensors=True,
            **quantization.quantized_load_kwargs(bits, config)).dequantize(dtype=torch.float32)
        assert not any(isinstance(m, QUANTISED[bits]) for m in base.modules())
        merged = PeftModel.from_pretrained(base, str(out)).merge_and_unload().eval()(input_ids=x).logits
        plain_base = AutoModelForSequenceClassification.from_pretrained(str(tiny_roberta), config=config)
        into_original = PeftModel.from_pretrained(plain_base, str(out)).merge_and_unload().eval()(input_ids=x).logits
    # Merged into the weights it was trained against, the adapter predicts what was trained (bf16 matmuls in
    # the 4-bit layers aside); merged into the original weights, it does not.
    dequantised_gap = (merged - trained).abs().max().item()
    original_gap = (into_original - trained).abs().max().item()
    # Merged into the dequantised weights, the adapter gives the trained logits to float rounding (2-3e-6 seen at
    # both widths). Into the original weights it is 26x further off at 4 bits; 8-bit rounding is finer than that
    # on this tiny model (3e-6 either way), so only 4 bits can tell the two merges apart.
    assert dequantised_gap < 2e-5, dequantised_gap
    if bits == 4:
        assert dequantised_gap < original_gap / 4, (dequantised_gap, original_gap)
    # infer.py and the merged export take the same road: the recipe beside the adapter says how many bits.
    classifier = Classifier.load(str(out), precision="fp32")
    assert not any(isinstance(m, QUANTISED[bits]) for m in classifier.model.modules())
    with torch.no_grad():
        served = classifier.model(input_ids=x).logits
    assert (served - merged).abs().max().item() < 2e-5


def test_merged_export_of_a_qlora_adapter_is_a_plain_fp32_model(qlora_run, tmp_path):
    bits, out, _ = qlora_run
    dest = export_merged(str(out), tmp_path / "merged")
    config = json.loads((dest / "config.json").read_text())
    assert "quantization_config" not in config
    model = AutoModelForSequenceClassification.from_pretrained(str(dest))
    assert not any(isinstance(m, QUANTISED[bits]) for m in model.modules())
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def _scratch_and_peft(model_path, bits: int, **kw) -> dict[str, torch.nn.Module]:
    """The same QLoRA model twice, with PEFT's bnb LoRA layers and with the scratch layer (lorakit/adapters/), from one
    seed; B (and DoRA's magnitudes) moved off their initial values, which would make the comparison trivial."""
    models = {}
    for impl in ("peft", "scratch"):
        recipe = _recipe(model_path, bits, lora_impl=impl, **kw)
        torch.manual_seed(0)
        model = modeling.build_model(recipe, modeling.load_config(recipe, LABELS))
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(0.1 * torch.randn(param.shape, generator=generator))
                elif "lora_magnitude_vector" in name:
                    param.mul_(1 + 0.1 * torch.randn(param.shape, generator=generator))
        models[impl] = model
    return models


def _query_layers(model) -> list[torch.nn.Module]:
    return [layer.attention.self.query for layer in model.base_model.model.roberta.encoder.layer]


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
@pytest.mark.parametrize("bits", [4, 8])
def test_scratch_layer_trains_as_peft_bnb_layers_do(tiny_roberta, bits, use_dora):
    # lora_impl: scratch on a 4-bit or 8-bit backbone wraps bitsandbytes' layer. Training-mode forwards and
    # backwards under the kit's bf16 autocast and in fp32, with an evaluation between them (on a CPU an 8-bit
    # DoRA layer used to lose its scales there and fail at the next step, in PEFT's layer too), give PEFT's
    # logits and gradients at every step.
    models = _scratch_and_peft(tiny_roberta, bits, use_dora=use_dora, lora_dropout=0.1)
    for layer in _query_layers(models["scratch"]):
        assert type(layer) is adapters.LoraLinear and isinstance(layer.base_layer, QUANTISED[bits])
    x = torch.randint(5, 100, (4, 16), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 1, 0])
    for autocast in (True, False, True):
        results = {}
        for impl, model in models.items():
            model.train().zero_grad()
            torch.manual_seed(3)  # the same dropout masks, drawn in the same order
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = model(input_ids=x, labels=labels)
            out.loss.backward()
            results[impl] = {"logits": out.logits.detach().float()} | {
                n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
            with torch.no_grad():
                results[impl]["eval logits"] = model.eval()(input_ids=x).logits
        assert results["peft"].keys() == results["scratch"].keys()
        for name, value in results["peft"].items():
            assert torch.allclose(results["scratch"][name], value, rtol=1e-5, atol=1e-7), (autocast, name)
        assert any("lora_A" in n and g.abs().max() > 0 for n, g in results["scratch"].items())


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
@pytest.mark.parametrize("bits", [4, 8])
def test_scratch_layer_merges_into_quantised_weights_as_peft_does(tiny_roberta, bits, use_dora):
    # Merging re-quantises W0 + dW into a new bitsandbytes weight, as PEFT's bnb layers do (it used to add dW
    # to the packed 4-bit bytes, which failed, or to the int8 codes, which silently gave a wrong model).
    models = _scratch_and_peft(tiny_roberta, bits, use_dora=use_dora)
    x = torch.randint(5, 100, (4, 16), generator=torch.Generator().manual_seed(0))
    weights, outputs = {}, {}
    for impl, model in models.items():
        model.eval()
        with torch.no_grad():
            unmerged = model(input_ids=x).logits
        layers = _query_layers(model)
        before = [dequantize_module_weight(layer.base_layer).clone() for layer in layers]
        with pytest.warns(UserWarning, match=f"{bits}-bit"):
            model.merge_adapter()
        with torch.no_grad():
            merged = model(input_ids=x).logits
        # Rounded to `bits` bits, the merged model is near the adapter's outputs, not equal to them.
        assert (merged - unmerged).abs().max() < 0.05 * unmerged.abs().max(), impl
        weights[impl] = [dequantize_module_weight(layer.base_layer).clone() for layer in layers]
        assert not any(torch.equal(a, b) for a, b in zip(before, weights[impl])), impl  # W0 + dW, re-quantised
        model.unmerge_adapter()
        weights[impl + " unmerged"] = [dequantize_module_weight(layer.base_layer).clone() for layer in layers]
        with torch.no_grad():
            outputs[impl] = {"merged": merged, "unmerged again": model(input_ids=x).logits}
        assert not any(layer.merged for layer in layers)
        unloaded = model.merge_and_unload()
        assert all(isinstance(layer, QUANTISED[bits]) for layer in
                   [block.attention.self.query for block in unloaded.roberta.encoder.layer])
        with torch.no_grad():
            outputs[impl]["merged and unloaded"] = unloaded(input_ids=x).logits
    for key in ("peft", "peft unmerged"):
        other = key.replace("peft", "scratch")
        assert all(torch.equal(a, b) for a, b in zip(weights[key], weights[other])), key
    for name, value in outputs["peft"].items():
        assert torch.equal(outputs["scratch"][name], value), name


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_with_dora_trains_alike_with_either_lora_layer(tiny_roberta, tmp_path, bits):
    # train.py end to end with DoRA on a quantised backbone, evaluating between steps: PEFT's layer and the
    # scratch layer log the same losses and save the same adapter.
    runs = {}
    for impl in ("peft", "scratch"):
        out = tmp_path / impl
        proc = run_script("train.py", "--task", "sst2", "--model_name_or_path", str(tiny_roberta), "--dataset_name",
                          str(GLUE), *QUICK, "--learning_rate", "0.05", f"--load_in_{bits}bit", "--use_dora", "true",
                          "--lora_impl", impl, "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "no",
                          "--load_best_model_at_end", "false", "--bf16", "false",
                          "--output_dir", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        history = json.loads((out / "log_history.json").read_text())
        with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
            runs[impl] = ([e.get("loss", e.get("eval_loss")) for e in history if "loss" in e or "eval_loss" in e],
                          {k: f.get_tensor(k) for k in f.keys()})
    losses, tensors = runs["peft"]
    assert len(losses) >= 6 and all(math.isfinite(v) for v in losses)  # 4 steps, evaluations at steps 2 and 4
    assert runs["scratch"][0] == pytest.approx(losses, rel=1e-5)
    assert runs["scratch"][1].keys() == tensors.keys()
    assert any("lora_magnitude_vector" in k for k in tensors)
    for key, value in tensors.items():
        assert torch.allclose(runs["scratch"][1][key], value, rtol=1e-4, atol=1e-6), key
