"""DoRA through the kit (`use_dora`): the budget the sweep plans with, train.py with either LoRA layer, the
adapter's files, infer.py and export.py merging it, the model card, and the one-line error for method full.
The layer's maths and its match with PEFT's are in tests/test_adapters.py."""

from __future__ import annotations

import json

import pytest
import torch
from peft import AutoPeftModelForSequenceClassification, PeftModel
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import GLUE, QUICK, run_script
from lorakit import hub, inference, modeling, sweep
from lorakit.errors import UsageError, run_cli
from lorakit.recipe import parse_recipe

TEXTS = ["a gripping, beautifully acted film", "dull, slow and far too long", "it is fine, i guess"]
HIDDEN, LAYERS, R = 32, 2, 4  # conftest's tiny backbones; the rank used below


def _args(model, *extra: str) -> list[str]:
    return ["--task", "sst2", "--model_name_or_path", str(model), "--dataset_name", str(GLUE), "--lora_r", str(R),
            "--max_seq_length", "64", *extra]


@pytest.mark.parametrize("impl", ["peft", "scratch"])
def test_the_sweep_plans_with_the_count_the_model_trains(tiny_models, impl):
    recipe = parse_recipe(_args(tiny_models["bert"], "--use_dora", "true", "--lora_impl", impl)).recipe
    plain = parse_recipe(_args(tiny_models["bert"], "--lora_impl", impl)).recipe
    config = modeling.load_config(recipe, ["negative", "positive"])
    report = modeling.param_report(modeling.build_model(recipe, config, random_weights=True))
    assert sweep.count_params(recipe).trainable == report.trainable
    # one magnitude per output row of each adapted layer (query and value of every layer), counted as LoRA
    assert report.lora - sweep.count_params(plain).lora == LAYERS * 2 * HIDDEN
    assert report.trainable - sweep.count_params(plain).trainable == LAYERS * 2 * HIDDEN


@pytest.fixture(scope="module", params=["peft", "scratch"])
def dora_run(request, tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("dora") / request.param
    proc = run_script("train.py", *_args(tiny_models["bert"]), *QUICK, "--learning_rate", "0.05", "--warmup_steps",
                      "0", "--use_dora", "true", "--lora_impl", request.param, "--output_dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"with DoRA ({request.param})" in proc.stderr  # the start-up log says what trains
    return out


def test_train_writes_a_dora_adapter(dora_run, tiny_models):
    assert json.loads((dora_run / "adapter_config.json").read_text())["use_dora"] is True
    metrics = json.loads((dora_run / "metrics.json").read_text())
    lora = LAYERS * 2 * (R * HIDDEN * 2 + HIDDEN)  # A, B and the magnitude of query and value per layer
    assert metrics["lora_params"] == lora
    base = {}
    with safe_open(str(tiny_models["bert"] / "model.safetensors"), "pt") as f:
        for key in f.keys():
            if key.endswith("attention.self.query.weight"):
                base[key.split(".")[-5]] = f.get_tensor(key)  # the layer index
    with safe_open(str(dora_run / "adapter_model.safetensors"), "pt") as f:
        magnitudes = {k: f.get_tensor(k) for k in f.keys() if k.endswith("lora_magnitude_vector")}
    assert len(magnitudes) == LAYERS * 2 and all(m.shape == (HIDDEN,) for m in magnitudes.values())
    # trained: no longer the row norms of the frozen weight they started at
    query = next(m for k, m in magnitudes.items() if ".layer.0.attention.self.query." in k)
    assert not torch.allclose(query, base["0"].norm(dim=1), atol=1e-4)


def test_infer_and_export_merge_it_as_peft_computes_it(dora_run, tmp_path):
    import export

    labels = json.loads((dora_run / "labels.json").read_text())["label_names"]
    model = AutoPeftModelForSequenceClassification.from_pretrained(str(dora_run), num_labels=len(labels)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(dora_run))
    with torch.no_grad():
        probs = [model(**tokenizer(t, return_tensors="pt")).logits.softmax(-1)[0] for t in TEXTS]
    merged = inference.Classifier.load(str(dora_run), precision="fp32")
    assert not any("lora" in name for name, _ in merged.model.named_parameters())  # merged, not attached
    dest = tmp_path / "merged"
    assert run_cli(export.main, ["--adapter", str(dora_run), "--output_dir", str(dest)]) == 0
    exported = inference.Classifier.load(str(dest), precision="fp32")
    for clf in (merged, exported):
        for rec, p in zip(clf.predict(TEXTS), probs):
            assert rec.label == labels[int(p.argmax())]
            assert [rec.scores[n] for n in labels] == pytest.approx(p.tolist(), abs=1e-5)


def test_the_model_card_says_dora(dora_run):
    card = hub.build_card(hub.read_run(dora_run), "me/tiny-sst2-dora", base_model="tiny")
    assert "- DoRA: r=4" in str(card)
    assert {"lora", "dora", "peft"} <= set(card.data.tags)


def test_dora_with_full_fine_tuning_is_a_one_line_error(tiny_models):
    with pytest.raises(UsageError, match="use_dora applies to LoRA's adapted layers but method is full"):
        parse_recipe(_args(tiny_models["bert"], "--use_dora", "true", "--method", "full"))


def test_qlora_with_dora_merges_into_the_dequantised_weights(tiny_roberta, tmp_path):
    from test_quantization import LABELS as QLABELS
    from test_quantization import _quantised_with_adapter

    out = tmp_path / "qdora"
    proc = run_script("train.py", "--task", "sst2", "--model_name_or_path", str(tiny_roberta), "--dataset_name",
                      str(GLUE), *QUICK, "--learning_rate", "0.05", "--load_in_4bit", "--use_dora", "true",
                      "--bf16", "false", "--output_dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        assert sum(k.endswith("lora_magnitude_vector") for k in f.keys()) == LAYERS * 2
    config = modeling.load_config(parse_recipe(_args(tiny_roberta)).recipe, QLABELS)
    x = torch.randint(5, config.vocab_size, (8, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        trained = _quantised_with_adapter(tiny_roberta, 4, out)(input_ids=x).logits  # 4-bit, DoRA unmerged
        served = inference.Classifier.load(str(out), precision="fp32").model(input_ids=x).logits
        plain_base = AutoModelForSequenceClassification.from_pretrained(str(tiny_roberta), config=config)
        into_original = PeftModel.from_pretrained(plain_base, str(out)).merge_and_unload().eval()(input_ids=x).logits
    # The adapter (DoRA's norms included) was fitted to the 4-bit weights: merged into their dequantised fp32 copy
    # it predicts what was trained (up to the 4-bit layers' bf16 matmuls); merged into the original weights, not.
    assert (served - trained).abs().max().item() < (into_original - trained).abs().max().item() / 4
