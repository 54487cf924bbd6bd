"""Regression, multi-label and class weights end to end on tiny backbones: train.py (both LoRA layers, full,
resume, sweep), export.py, infer.py (texts, file, stdin, --json) and the model card, checked on what they write.

Training runs in-process through train.py's own `main` and run_cli (a subprocess per run would spend most of the
time importing torch); infer.py runs the same way.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import sys

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import GLUE, QUICK, REPO, SHARED_DATA
from lorakit.errors import run_cli
from lorakit.hub import build_card, read_run
from lorakit.inference import export_merged

_spec = importlib.util.spec_from_file_location("train_script", REPO / "train.py")
train_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_script)

PAIRS = [("A man is playing a guitar.", "A man plays the guitar."), ("zzzz qqq xx", "1 2 3 4 5 6 7 8 9 10 11 12")]


def _train(*argv: str) -> None:
    assert run_cli(train_script.main, [*QUICK, *argv]) == 0


@pytest.fixture
def infer(capsys, monkeypatch):
    """infer.py's main in this process: (exit code, stdout, stderr)."""
    import infer as script

    def run(*args, stdin=None):
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((stdin or "").encode())))
        if stdin is None:
            monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
        code = run_cli(script.main, list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="module")
def stsb(tiny_roberta, tmp_path_factory):
    out = tmp_path_factory.mktemp("stsb") / "run"
    _train("--task", "stsb", "--model_name_or_path", str(tiny_roberta), "--dataset_name", str(GLUE),
           "--output_dir", str(out))
    return out


@pytest.fixture(scope="module")
def emotions(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("emotions") / "run"
    _train("--task", "go_emotions", "--model_name_or_path", str(tiny_models["bert"]), "--dataset_name",
           str(SHARED_DATA / "go_emotions"), "--lora_impl", "scratch", "--threshold", "0.45", "--output_dir", str(out))
    return out


def _model_outputs(folder, pairs) -> np.ndarray:
    """The logits transformers alone computes from a merged export."""
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    enc = tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits.numpy()


def test_regression_trains_reports_correlations_and_prints_scores(stsb, tmp_path, infer):
    metrics = json.loads((stsb / "metrics.json").read_text())
    assert {"eval_pearson", "eval_spearmanr", "best_eval_pearson", "eval_loss"} <= set(metrics)
    assert json.loads((stsb / "labels.json").read_text())["problem_type"] == "regression"
    assert json.loads((stsb / "labels.json").read_text())["label_names"] == ["similarity"]

    merged = export_merged(str(stsb), tmp_path / "merged")
    config = json.loads((merged / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "similarity"}
    expected = _model_outputs(merged, PAIRS)[:, 0]
    assert abs(expected[0] - expected[1]) > 2e-5  # the check below can fail (a tiny random backbone's scores differ
    # little from one input to the next)

    args = [PAIRS[0][0], "--pair", PAIRS[0][1], PAIRS[1][0], "--pair", PAIRS[1][1], "--precision", "fp32"]
    for adapter in (stsb, merged):
        code, out, err = infer("--adapter", str(adapter), "--json", *args)
        assert code == 0, err
        records = [json.loads(line) for line in out.splitlines()]
        assert set(records[0]) == {"text", "text_pair", "score"}
        assert [r["score"] for r in records] == pytest.approx(expected.tolist(), abs=1e-7)
    code, out, err = infer("--adapter", str(stsb), *args)
    score, *texts = out.splitlines()[0].split("\t")
    assert texts == list(PAIRS[0]) and float(score) == pytest.approx(expected[0], abs=1e-4)

    card = build_card(read_run(stsb), "someone/tiny-stsb")
    results = card.data.eval_results
    assert [(r.metric_type, r.metric_name) for r in results] == [("pearsonr", "Pearson correlation"),
                                                                  ("spearmanr", "Spearman correlation")]
    assert results[0].metric_value == pytest.approx(round(metrics["eval_pearson"], 4))
    assert "logits[0, 0].item()" in card.text and "softmax" not in card.text


def test_multi_label_trains_with_the_scratch_layer_and_prints_every_label_over_the_threshold(emotions, tmp_path,
                                                                                             infer):
    metrics = json.loads((emotions / "metrics.json").read_text())
    assert {"eval_f1_macro", "eval_f1_micro", "eval_exact_match"} <= set(metrics)
    labels = json.loads((emotions / "labels.json").read_text())
    assert labels["problem_type"] == "multi_label_classification" and labels["threshold"] == 0.45
    assert len(labels["label_names"]) == 28
    assert yaml.safe_load((emotions / "recipe.yaml").read_text())["lora_impl"] == "scratch"

    merged = export_merged(str(emotions), tmp_path / "merged")
    assert json.loads((merged / "labels.json").read_text())["threshold"] == 0.45
    texts = ["thank you so much, this is great", "why would anyone do that?"]
    model = AutoModelForSequenceClassification.from_pretrained(str(merged)).eval()
    assert model.config.problem_type == "multi_label_classification"
    enc = AutoTokenizer.from_pretrained(str(merged))(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = model(**enc).logits.sigmoid().numpy()
    # A threshold between the first text's probabilities: the labels above it, most probable first.
    threshold = float(np.sort(probs[0])[-3:-1].mean())
    wanted = [labels["label_names"][i] for i in np.argsort(-probs[0]) if probs[0, i] > threshold]
    assert len(wanted) == 2

    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    for route in (["--file", str(tmp_path / "texts.txt")], texts):
        code, out, err = infer("--adapter", str(emotions), "--precision", "fp32", "--threshold", str(threshold),
                               *route)
        assert code == 0, err
        first = out.splitlines()[0].split("\t")
        assert first[0:4:2] == wanted and first[-1] == texts[0]
        assert [float(p) for p in first[1:4:2]] == pytest.approx(sorted(probs[0], reverse=True)[:2], abs=1e-4)
    code, out, err = infer("--adapter", str(merged), "--precision", "fp32", "--json", "--threshold", str(threshold),
                           stdin="\n".join(texts) + "\n")
    record = json.loads(out.splitlines()[0])
    assert [x["label"] for x in record["labels"]] == wanted and "label" not in record
    assert len(record["scores"]) == 28

    card = build_card(read_run(emotions), "someone/tiny-emotions")
    types = [(r.metric_type, r.metric_args) for r in card.data.eval_results]
    assert types == [("f1", {"average": "macro"}), ("f1", {"average": "micro"}), ("exact_match", None)]
    assert "sigmoid()" in card.text and "0.45" in card.text


def test_threshold_outside_0_1_or_on_another_problem_type_is_one_line(stsb, infer):
    code, out, err = infer("--adapter", str(stsb), "--threshold", "1.5", "a", "--pair", "b")
    assert code == 2 and err.startswith("error: --threshold should be between 0 and 1") and not out
    code, out, err = infer("--adapter", str(stsb), "--threshold", "0.5", "a", "--pair", "b")
    assert code == 2 and "--threshold applies to multi-label adapters" in err and not out


def _weighted_rows(path) -> str:
    import datasets

    sentences = datasets.load_dataset(str(GLUE), "sst2", split="train[:64]")["sentence"]
    sets = [["a"], ["a", "b"], ["c"], ["a"]]
    path.write_text("".join(json.dumps({"text": s, "tags": sets[i % 4]}) + "\n" for i, s in enumerate(sentences)))
    return str(path)


def test_multi_label_pos_weight_balanced_is_saved_and_resumes_to_the_same_run(tiny_roberta, tmp_path):
    data = _weighted_rows(tmp_path / "tags.jsonl")
    args = ["--config", "configs/go_emotions.yaml", "--model_name_or_path", str(tiny_roberta), "--train_file", data,
            "--validation_file", data, "--label_column_name", "tags", "--label_names", "none",
            "--class_weights", "balanced", "--num_train_epochs", "2", "--save_total_limit", "10"]
    _train(*args, "--output_dir", str(tmp_path / "full"))
    recipe = yaml.safe_load((tmp_path / "full" / "recipe.yaml").read_text())
    # per label: a in 3 of 4 rows, b in 1, c in 1: negatives / positives
    assert recipe["class_weights"] == pytest.approx([1 / 3, 3.0, 3.0])
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())

    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-4", tmp_path / "resumed" / "checkpoint-4")
    _train(*args, "--output_dir", str(tmp_path / "resumed"), "--resume_from_checkpoint", "latest")
    resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    keys = ["eval_loss", "eval_f1_macro", "eval_f1_micro", "eval_exact_match"]
    assert {k: resumed[k] for k in keys} == pytest.approx({k: full[k] for k in keys})


def test_single_label_balanced_weights_full_fine_tuning_on_star_ratings(tiny_models, tmp_path):
    import datasets

    sentences = datasets.load_dataset(str(GLUE), "sst2", split="train[:64]")["sentence"]
    stars = [5, 1, 3, 5, 5, 4, 2, 5]
    path = tmp_path / "stars.jsonl"
    path.write_text("".join(json.dumps({"review": s, "stars": stars[i % 8]}) + "\n" for i, s in enumerate(sentences)))
    out = tmp_path / "run"
    _train("--task", "sst2", "--model_name_or_path", str(tiny_models["bert"]), "--train_file", str(path),
           "--validation_file", str(path), "--text_column_names", "review", "--label_column_name", "stars",
           "--label_names", "none", "--metrics", "accuracy,f1_macro", "--class_weights", "balanced",
           "--method", "full", "--output_dir", str(out))
    assert json.loads((out / "labels.json").read_text())["label_names"] == ["1", "2", "3", "4", "5"]
    counts = [8, 8, 8, 8, 32]  # of 64 rows: 1, 2, 3, 4 once per 8 and 5 four times
    assert yaml.safe_load((out / "recipe.yaml").read_text())["class_weights"] == \
        pytest.approx([64 / (5 * c) for c in counts])
    assert json.loads((out / "config.json").read_text())["id2label"] == {str(i): str(i + 1) for i in range(5)}


def test_a_regression_sweep_tabulates_its_headline(tiny_roberta, tmp_path):
    root = tmp_path / "sweep"
    _train("--task", "stsb", "--model_name_or_path", str(tiny_roberta), "--dataset_name", str(GLUE), "--max_steps",
           "2", "--sweep", "lora_r=2,4", "--output_dir", str(root))
    table = (root / "results.md").read_text()
    assert "best pearson" in table and "final spearmanr" in table
    assert all((root / name).is_file() for name in ("eval_curves.png", "best_metric.png", "metric_vs_params.png"))
