"""train.py end to end on tiny random backbones and the offline GLUE mirror: files written, report, dry run."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import GLUE, QUICK, make_tiny_model, run_script, train_quick_sst2, tree
from lorakit import modeling

ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "labels.json", "recipe.yaml", "metrics.json", "log_history.json", "learning_curve.png"}


def _report(stderr: str) -> dict[str, int]:
    match = re.search(r"parameters: ([\d,]+) total, ([\d,]+) trainable", stderr)
    split = re.search(r"trainable split: ([\d,]+) in LoRA matrices, ([\d,]+) in the head", stderr)
    assert match and split, stderr
    total, trainable = (int(x.replace(",", "")) for x in match.groups())
    lora, head = (int(x.replace(",", "")) for x in split.groups())
    return {"total": total, "trainable": trainable, "lora": lora, "head": head}


def expected_counts(hidden: int, layers: int, r: int, n_targets: int, num_labels: int) -> tuple[int, int]:
    """LoRA params of r-rank A (r x h) and B (h x r) per target per layer; RoBERTa's head: dense h x h + out."""
    lora = layers * n_targets * 2 * r * hidden
    head = hidden * hidden + hidden + hidden * num_labels + num_labels
    return lora, head


@pytest.fixture(scope="module")
def sst2_run(tiny_roberta, tmp_path_factory):
    out = tmp_path_factory.mktemp("sst2") / "run"
    return out, train_quick_sst2(tiny_roberta, out)


def test_sst2_writes_a_self_contained_adapter(sst2_run, tiny_roberta):
    out, proc = sst2_run
    names = {p.name for p in out.iterdir()}
    assert ADAPTER_FILES <= names, names
    assert any(n.startswith("checkpoint-") for n in names)
    assert not any(n.startswith(".staging") for n in names)

    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("trainable_params", "total_params", "eval_accuracy", "train_samples_per_second", "train_runtime"):
        assert key in metrics, key
    last_eval = [e for e in json.loads((out / "log_history.json").read_text()) if "eval_accuracy" in e][-1]
    assert metrics["eval_accuracy"] == last_eval["eval_accuracy"]
    assert (metrics["eval_accuracy"] * 32) % 1 == 0  # a count of the 32 eval rows

    # The parameter report in the log matches metrics.json and the arithmetic of the shapes.
    report = _report(proc.stderr)
    assert report["trainable"] == metrics["trainable_params"] and report["total"] == metrics["total_params"]
    lora, head = expected_counts(hidden=32, layers=2, r=8, n_targets=2, num_labels=2)
    assert (report["lora"], report["head"]) == (lora, head)

    labels = json.loads((out / "labels.json").read_text())
    assert labels["label_names"] == ["negative", "positive"]
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["task_name"] == "sst2" and recipe["max_train_samples"] == 64
    assert recipe["model_name_or_path"] == str(tiny_roberta)
    history = json.loads((out / "log_history.json").read_text())
    assert any("loss" in e for e in history) and any("eval_accuracy" in e for e in history)
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"

    # The head is saved with the adapter, so the folder alone rebuilds the trained classifier.
    keys = load_file(str(out / "adapter_model.safetensors")).keys()
    assert any("lora_A" in k for k in keys) and any("classifier" in k for k in keys)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_roberta) and config["task_type"] == "SEQ_CLS"


def test_saved_adapter_reproduces_the_reported_loss_and_accuracy(sst2_run, tiny_roberta):
    """Reload base + adapter with stock PEFT and recompute the eval loss and accuracy on the same rows, batched and
    padded as the Trainer did: the loss (a function of every logit) tells a correct reload from a wrong head."""
    import datasets

    from lorakit.data import PaddingCollator
    from lorakit.hardware import cpu_has_bf16

    out, _ = sst2_run
    tok = AutoTokenizer.from_pretrained(out)
    rows = datasets.load_dataset(str(GLUE), "sst2", split="validation[:32]")
    features = [{**tok(sentence, truncation=True, max_length=64), "labels": label}
                for sentence, label in zip(rows["sentence"], rows["label"])]
    batch = PaddingCollator(tok)(features)

    def loss_and_accuracy(model):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_has_bf16()):
            output = model.eval()(**batch)
        return output.loss.item(), (output.logits.argmax(-1) == batch["labels"]).float().mean().item()

    base = AutoModelForSequenceClassification.from_pretrained(tiny_roberta, num_labels=2)
    base_loss, _ = loss_and_accuracy(base)
    loss, accuracy = loss_and_accuracy(PeftModel.from_pretrained(base, out))
    metrics = json.loads((out / "metrics.json").read_text())
    # Same rows, batch, padding and precision as the Trainer's evaluation: the loss comes back to float rounding
    # (6e-8 seen), while the base with its random head is 1e-3 away after the run's four steps.
    assert loss == pytest.approx(metrics["eval_loss"], abs=1e-5)
    assert abs(base_loss - metrics["eval_loss"]) > 1e-4
    assert accuracy == pytest.approx(metrics["eval_accuracy"], abs=1 / 32 + 1e-9)


def test_sentence_pair_task_with_scratch_layer(tiny_roberta, tmp_path):
    out = tmp_path / "mrpc"
    proc = run_script("train.py", "--task", "mrpc", "--model_name_or_path", str(tiny_roberta),
                      "--dataset_name", str(GLUE), *QUICK, "--output_dir", str(out), "--lora_impl", "scratch",
                      "--lora_r", "4", "--lora_target_modules", "query,key,value")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"eval_accuracy", "eval_f1"} <= set(metrics)
    lora, head = expected_counts(hidden=32, layers=2, r=4, n_targets=3, num_labels=2)
    assert (metrics["lora_params"], metrics["head_params"]) == (lora, head)
    assert "(scratch)" in proc.stderr
    assert json.loads((out / "labels.json").read_text())["text_columns"] == ["sentence1", "sentence2"]


def test_own_csv_files_take_label_names_from_the_data(tiny_models, tmp_path):
    rows = [("great fun", "pos"), ("dull and slow", "neg"), ("a joy", "pos"), ("boring", "neg"),
            ("loved it", "pos"), ("awful", "neg"), ("a quiet triumph", "neutral"), ("fine", "neutral")] * 4
    train = tmp_path / "train.csv"
    train.write_text("review,stars\n" + "\n".join(f"{t},{l}" for t, l in rows) + "\n")
    out = tmp_path / "run"
    proc = run_script("train.py", "--config", "configs/sst2.yaml", "--train_file", str(train),
                      "--validation_file", str(train), "--text_column_names", "review", "--label_column_name",
                      "stars", "--label_names", "none", "--model_name_or_path", str(tiny_models["bert"]),
                      *QUICK, "--output_dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "labels.json").read_text())["label_names"] == ["neg", "neutral", "pos"]
    assert json.loads((out / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"


def test_full_fine_tuning_baseline(tiny_roberta, tmp_path):
    out = tmp_path / "full"
    proc = run_script("train.py", "--task", "sst2", "--model_name_or_path", str(tiny_roberta),
                      "--dataset_name", str(GLUE), *QUICK, "--output_dir", str(out), "--method", "full")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trainable_params"] == metrics["total_params"] and metrics["lora_params"] == 0
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "negative", 1: "positive"}


def test_dry_run_from_a_config_only_folder_writes_nothing(tmp_path):
    folder = make_tiny_model("roberta", tmp_path / "config-only", weights=False)
    assert [p.name for p in folder.iterdir()] == ["config.json"]
    out = tmp_path / "out"
    proc = run_script("train.py", "--task", "agnews", "--model_name_or_path", str(folder), "--dataset_name",
                      str(GLUE.parent / "ag_news"), "--max_seq_length", "64", "--output_dir", str(out), "--dry_run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = _report(proc.stderr)
    lora, head = expected_counts(hidden=32, layers=2, r=8, n_targets=2, num_labels=4)
    assert (report["lora"], report["head"]) == (lora, head)
    assert "dry run" in proc.stderr and not out.exists()


def test_budget_exceeded_stops_before_training(tiny_roberta, tmp_path):
    out = tmp_path / "out"
    proc = run_script("train.py", "--task", "sst2", "--model_name_or_path", str(tiny_roberta),
                      "--dataset_name", str(GLUE), *QUICK, "--output_dir", str(out), "--max_trainable_params", "1000")
    assert proc.returncode == 2
    assert re.search(r"^error: the run would train 3,170 parameters, over max_trainable_params 1,000",
                     proc.stderr, re.M), proc.stderr
    assert tree(out) == {}


@pytest.mark.parametrize("impl", ["peft", "scratch"])
def test_frozen_linears_stored_in_bf16_compute_exactly_what_autocast_does(tiny_roberta, impl):
    from lorakit.recipe import Recipe

    recipe = Recipe(model_name_or_path=str(tiny_roberta), lora_impl=impl, label_names=["a", "b"])
    config = modeling.load_config(recipe, ["a", "b"])

    def loss_and_grads(store: bool):
        torch.manual_seed(0)
        model = modeling.build_model(recipe, config).eval()  # eval: no dropout masks to tell apart
        if store:
            assert modeling.store_frozen_linears(model, torch.bfloat16) > 0
        x = torch.randint(5, config.vocab_size, (4, 12), generator=torch.Generator().manual_seed(1))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=x, labels=torch.tensor([0, 1, 1, 0])).loss
        loss.backward()
        return loss.item(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    (loss, grads), (stored_loss, stored_grads) = loss_and_grads(False), loss_and_grads(True)
    assert stored_loss == loss
    assert grads.keys() == stored_grads.keys()
    assert all(torch.equal(grads[n], stored_grads[n]) for n in grads)
    assert all(p.dtype == torch.float32 for p in stored_grads.values())
