"""What trains beside the LoRA matrices: the classification head, which for BERT includes its pooler (RoBERTa's
head holds the same dense + tanh layer inside `classifier`), overridable with `lora_modules_to_save`."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import GLUE, QUICK, run_script
from lorakit import modeling, sweep
from lorakit.errors import UsageError
from lorakit.recipe import parse_recipe

LABELS = ["not_equivalent", "equivalent"]


def _recipe(model, *extra: str):
    return parse_recipe(["--task", "mrpc", "--model_name_or_path", str(model), "--dataset_name", str(GLUE),
                         "--label_names", ",".join(LABELS), "--max_seq_length", "64", *extra]).recipe


def trained_modules(recipe) -> tuple[set[str], int]:
    """Names of the fully trained modules (not LoRA), and the trainable count `sweep` plans with."""
    config = modeling.load_config(recipe, LABELS)
    model = modeling.build_model(recipe, config, random_weights=True)
    names = {n.split(".modules_to_save.")[0].removeprefix("base_model.model.")
             for n, p in model.named_parameters() if p.requires_grad and ".lora_" not in n}
    assert sweep.count_params(recipe).trainable == modeling.param_report(model).trainable
    return names, modeling.param_report(model).trainable


@pytest.mark.parametrize("kind, expected", [("roberta", {"classifier"}), ("bert", {"bert.pooler", "classifier"})])
def test_each_architecture_trains_the_same_head(tiny_models, kind, expected):
    names, _ = trained_modules(_recipe(tiny_models[kind]))
    assert names == expected


def test_lora_modules_to_save_overrides_the_default(tiny_models):
    with_pooler, n_pooler = trained_modules(_recipe(tiny_models["bert"]))
    alone, n_alone = trained_modules(_recipe(tiny_models["bert"], "--lora_modules_to_save", "classifier"))
    assert alone == {"classifier"}
    assert n_pooler - n_alone == 32 * 32 + 32  # the tiny model's pooler: dense 32 x 32 with its bias
    empty, _ = trained_modules(_recipe(tiny_models["bert"], "--lora_modules_to_save", ""))
    assert empty == {"classifier"}
    names, _ = trained_modules(_recipe(tiny_models["roberta"], "--lora_modules_to_save", "dense"))
    assert {"classifier"} < names and all(n.endswith("dense") for n in names - {"classifier"})


def test_a_module_the_model_lacks_is_a_one_line_error(tiny_models, tmp_path):
    # RoBERTa's sequence classifier is built without a pooler.
    with pytest.raises(UsageError, match="lora_modules_to_save 'pooler' matches no module of roberta"):
        trained_modules(_recipe(tiny_models["roberta"], "--lora_modules_to_save", "pooler"))
    out = tmp_path / "run"
    proc = run_script("train.py", "--task", "mrpc", "--model_name_or_path", str(tiny_models["bert"]),
                      "--dataset_name", str(GLUE), *QUICK, "--lora_modules_to_save", "poolr", "--output_dir", str(out))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: lora_modules_to_save 'poolr' matches no module of bert; name a module the model has (e.g. pooler) "
        "or leave the key unset")
    assert not out.exists()


def test_the_pooler_trains_and_travels_in_the_adapter(tiny_models, tmp_path):
    out = tmp_path / "run"
    proc = run_script("train.py", "--task", "mrpc", "--model_name_or_path", str(tiny_models["bert"]),
                      "--dataset_name", str(GLUE), *QUICK, "--learning_rate", "1e-2", "--output_dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    base = load_file(str(tiny_models["bert"] / "model.safetensors"))
    base_pooler = next(v for k, v in base.items() if k.endswith("pooler.dense.weight"))
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = [k for k in f.keys() if ".pooler." in k and k.endswith("dense.weight")]
        assert keys, "the adapter carries no pooler"
        assert not torch.equal(f.get_tensor(keys[0]), base_pooler)  # trained, not a copy of the frozen one
