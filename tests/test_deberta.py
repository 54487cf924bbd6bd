"""DeBERTa-v2/v3: LoRA on query_proj/value_proj, the ContextPooler trained and saved with the head (PEFT's
troubleshooting guide: a pooler left out of the adapter comes back randomly initialised), eager attention,
and the shipped deberta-v2-xlarge SST-2 recipe run end to end on a tiny DeBERTa-v2."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification

from conftest import GLUE, QUICK, run_script
from lorakit import modeling
from lorakit.errors import UsageError
from lorakit.recipe import parse_recipe

LABELS = ["negative", "positive"]


def _recipe(model, *extra: str):
    return parse_recipe(["--task", "sst2_deberta_v2_xlarge", "--model_name_or_path", str(model),
                         "--dataset_name", str(GLUE), *extra]).recipe


def test_recipe_points_at_deberta_v2_xlarge():
    recipe = parse_recipe(["--task", "sst2_deberta_v2_xlarge"]).recipe
    assert recipe.model_name_or_path == "microsoft/deberta-v2-xlarge"
    assert recipe.attn_implementation == "eager"
    assert recipe.lora_target_modules is None  # the architecture's defaults below


def test_lora_on_query_value_proj_with_trainable_pooler(tiny_models):
    recipe = _recipe(tiny_models["deberta-v2"])
    config = modeling.load_config(recipe, LABELS)
    model = modeling.build_model(recipe, config)
    assert model.config._attn_implementation == "eager"
    adapted = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == {"query_proj", "value_proj"}
    trainable = {n.split(".modules_to_save.")[0].removeprefix("base_model.model.")
                 for n, p in model.named_parameters() if p.requires_grad and ".lora_" not in n}
    assert trainable == {"pooler", "classifier"}


def test_sdpa_is_refused_in_one_line(tiny_models):
    recipe = _recipe(tiny_models["deberta-v2"], "--attn_implementation", "sdpa")
    config = modeling.load_config(recipe, LABELS)
    with pytest.raises(UsageError, match="attn_implementation 'sdpa' is not available for deberta-v2"):
        modeling.build_model(recipe, config, random_weights=True)


def _pooler_weight(model) -> torch.Tensor:
    """The pooler weight the model computes with (PEFT's trainable copy when there is one)."""
    weights = {n: p for n, p in model.named_parameters() if ".pooler." in n and n.endswith(".dense.weight")}
    trained = [p for n, p in weights.items() if ".modules_to_save." in n]
    return (trained or [p for n, p in weights.items() if ".original_module." not in n])[0].detach().clone()


def _train_save_reload(folder, out, *extra: str) -> dict[str, torch.Tensor]:
    """A few optimizer steps on the kit's DeBERTa model, then saved and reloaded onto a freshly loaded backbone:
    the pooler weight before and after training, the logits before saving and after reloading."""
    recipe = _recipe(folder, "--lora_dropout", "0", *extra)
    config = modeling.load_config(recipe, LABELS)
    torch.manual_seed(0)
    model = modeling.build_model(recipe, config)
    pooler_init = _pooler_weight(model)
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(5, config.vocab_size, (8, 16), generator=generator)
    y = torch.randint(0, 2, (8,), generator=generator)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        model(input_ids=x, labels=y).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        before = model(input_ids=x).logits
    model.save_pretrained(out)
    torch.manual_seed(1)  # the fresh backbone's missing modules (pooler, classifier) initialise differently
    base = AutoModelForSequenceClassification.from_pretrained(str(folder), config=config)
    reloaded = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        after = reloaded(input_ids=x).logits
    return {"pooler_init": pooler_init, "pooler_trained": _pooler_weight(model), "before": before, "after": after}


def test_trains_saves_and_reloads_with_identical_logits(tiny_models, tmp_path):
    result = _train_save_reload(tiny_models["deberta-v2"], tmp_path / "adapter")
    assert not torch.equal(result["pooler_trained"], result["pooler_init"])
    assert torch.equal(result["after"], result["before"])
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        assert any(".pooler.dense." in k for k in f.keys())


def test_without_the_pooler_in_the_adapter_reload_differs(tiny_models, tmp_path):
    # The pitfall the test above guards against: the pooler is not in the pretrained checkpoint, so unless the
    # adapter carries it, every reload draws a new random pooler.
    result = _train_save_reload(tiny_models["deberta-v2"], tmp_path / "adapter", "--lora_modules_to_save", "")
    assert torch.equal(result["pooler_trained"], result["pooler_init"])
    assert not torch.allclose(result["after"], result["before"], atol=1e-4)


def test_recipe_trains_end_to_end(tiny_models, tmp_path):
    out = tmp_path / "run"
    proc = run_script("train.py", "--task", "sst2_deberta_v2_xlarge", "--model_name_or_path",
                      str(tiny_models["deberta-v2"]), "--dataset_name", str(GLUE), *QUICK, "--output_dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"query_proj", "value_proj"}
    assert {"pooler", "classifier"} <= set(config["modules_to_save"])
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert any(".pooler.dense." in k for k in keys) and any(".classifier." in k for k in keys)
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["attn_implementation"] == "eager" and saved["lora_r"] == 8
