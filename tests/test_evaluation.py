"""Evaluation like a practitioner: validation carved from train (never the test rows), the test split scored once
after training, eval-only scoring of a trained adapter (score.py) with the same numbers, early stopping, warm
starts from another adapter. Tiny random backbones, few rows, in-process except score.py's own end-to-end test."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from collections import Counter

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import f1_score
from transformers import TrainerCallback

from conftest import AG_NEWS, GLUE, QUICK, REPO, make_tiny_model, run_script, tree
from lorakit import data as data_lib
from lorakit import evaluation, modeling, warmstart
from lorakit.errors import UsageError
from lorakit.inference import export_merged
from lorakit.recipe import parse_recipe
from lorakit.runfolder import (CLASS_REPORT_FILE, CONFUSION_FILE, METRICS_FILE, PREDICTIONS_FILE,
                               VALIDATION_ROWS_FILE)

AG_TINY = ["--max_seq_length", "64", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "64",
           "--logging_steps", "1", "--num_train_epochs", "1"]
TEST_ROWS = 48


def _train_function():
    """train.py's `train`, the run's steps, called in-process."""
    spec = importlib.util.spec_from_file_location("train_script", REPO / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.train


train = _train_function()


def prepare(resolved, load_weights: bool = True):
    """The model of train.py's steps 3 and 4 (data, model, warm start), at step 0."""
    recipe = resolved.recipe
    names = data_lib.load_task_data(recipe).label_names
    _, model, _ = modeling.prepare(recipe, names, load_weights=load_weights)
    warmstart.init(recipe, model, names)
    return model


def agnews(*extra: str):
    return parse_recipe(["--task", "agnews", "--dataset_name", str(AG_NEWS), *extra])


# ---------------------------------------------------------------------------------------------------------------
# Validation carved from train

def test_agnews_selects_on_train_rows_and_tests_on_the_test_split():
    recipe = agnews().recipe
    task = data_lib.load_task_data(recipe, seed=42)
    train = datasets.load_dataset(str(AG_NEWS), split="train")
    test = datasets.load_dataset(str(AG_NEWS), split="test")
    rows = task.validation_rows
    assert len(rows) == 100 and len(task.eval) == 100 and len(task.train) == 1900 and len(task.test) == len(test)
    # The validation rows are train rows, held out of training, and none of them is a test row.
    assert task.eval["text"] == [train[i]["text"] for i in rows]
    assert not set(task.eval["text"]) & set(task.train["text"])
    assert not set(task.eval["text"]) & set(test["text"])
    # Stratified: each class keeps its share of train (within one row).
    whole, held = Counter(train["label"]), Counter(task.eval["labels"])
    for label, count in whole.items():
        assert abs(held[label] - count * 0.05) <= 1, (label, held[label], count)
    # Seeded: the same seed draws the same rows, another seed others; saved rows are taken as they are.
    assert data_lib.load_task_data(recipe, seed=42).validation_rows == rows
    assert data_lib.load_task_data(recipe, seed=7).validation_rows != rows
    saved = data_lib.load_task_data(recipe, seed=7, validation_rows=rows)
    assert saved.validation_rows == rows and saved.eval["text"] == task.eval["text"]


@pytest.mark.parametrize("value", ["0", "-5", "50.5", "80"])
def test_validation_split_percentage_outside_0_50_is_refused(value):
    with pytest.raises(UsageError, match=rf"validation_split_percentage should be in \(0, 50\].*{value}"):
        agnews("--validation_split_percentage", value)


# ---------------------------------------------------------------------------------------------------------------
# A tiny AG News run: checkpoints chosen on the carved validation rows, the test split scored once at the end

class Recorder(TrainerCallback):
    """Rows of every evaluation during training, and how often Trainer predicted (the test step)."""

    def __init__(self):
        self.evaluated, self.predicted = [], 0

    def on_evaluate(self, args, state, control, eval_dataloader=None, **kwargs):
        self.evaluated.append(len(eval_dataloader.dataset))

    def on_predict(self, args, state, control, metrics, **kwargs):
        self.predicted += 1


@pytest.fixture(scope="module")
def agnews_run(tiny_roberta, tmp_path_factory):
    out = tmp_path_factory.mktemp("agnews") / "run"
    recorder = Recorder()
    resolved = agnews("--model_name_or_path", str(tiny_roberta), *AG_TINY, "--max_train_samples", "48",
                      "--max_test_samples", str(TEST_ROWS), "--eval_steps", "1", "--save_steps", "1",
                      "--learning_rate", "5e-3", "--warmup_steps", "0", "--output_dir", str(out))
    metrics = train(resolved, callbacks=(recorder,))
    return out, metrics, recorder


def test_checkpoint_choice_never_reads_test(agnews_run):
    out, metrics, recorder = agnews_run
    # Every evaluation during training read the 100 carved validation rows (the final figures are the best
    # checkpoint's, already evaluated); the test split was read once, by the test step, after that checkpoint loaded.
    assert recorder.evaluated == [100, 100, 100] and recorder.predicted == 1
    assert metrics["best_model_checkpoint"] in {"checkpoint-1", "checkpoint-2", "checkpoint-3"}
    saved = json.loads((out / VALIDATION_ROWS_FILE).read_text())
    assert saved["rows"] == data_lib.load_task_data(agnews().recipe, seed=42).validation_rows
    written = json.loads((out / METRICS_FILE).read_text())
    assert written["test_rows"] == TEST_ROWS and {"eval_accuracy", "test_accuracy", "test_f1_macro"} <= set(written)
    assert sum(map(sum, written["test_confusion_matrix"])) == TEST_ROWS
    assert {PREDICTIONS_FILE, CLASS_REPORT_FILE, CONFUSION_FILE} <= {p.name for p in out.iterdir()}
    table = (out / CLASS_REPORT_FILE).read_text()
    for name in ("World", "Sports", "Business", "Sci/Tech", "macro avg"):
        assert f"| {name} |" in table


def test_a_resumed_run_keeps_the_saved_validation_rows(agnews_run, tiny_roberta, tmp_path):
    out, _, _ = agnews_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    # Resume from the earliest checkpoint, so that the resumed run trains and evaluates again.
    checkpoints = sorted(copy.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for later in checkpoints[1:]:
        shutil.rmtree(later)
    rows = json.loads((copy / VALIDATION_ROWS_FILE).read_text())["rows"]
    # Another seed would carve other rows; the resumed run reads the saved ones instead.
    assert data_lib.load_task_data(agnews().recipe, seed=7).validation_rows != rows
    recorder = Recorder()
    train(agnews("--model_name_or_path", str(tiny_roberta), *AG_TINY, "--max_train_samples", "48",
                        "--max_test_samples", "8", "--seed", "7", "--resume_from_checkpoint", "latest",
                        "--eval_steps", "1", "--save_steps", "1", "--output_dir", str(copy)), callbacks=(recorder,))
    assert json.loads((copy / VALIDATION_ROWS_FILE).read_text())["rows"] == rows
    assert recorder.evaluated and set(recorder.evaluated) == {100}


def test_eval_only_matches_what_training_reported_on_the_same_rows(agnews_run, tmp_path):
    out, metrics, _ = agnews_run
    before = tree(out)
    scored = evaluation.score_adapter(str(out), tmp_path / "scored", data={
        "dataset_name": str(AG_NEWS), "test_split": "test", "text_column_names": ["text"],
        "max_test_samples": TEST_ROWS})
    assert tree(out) == before  # nothing written into the adapter's folder
    for key in ("test_accuracy", "test_f1_macro", "test_rows", "test_report", "test_confusion_matrix"):
        assert scored[key] == metrics[key], key
    with (out / PREDICTIONS_FILE).open() as a, (tmp_path / "scored" / PREDICTIONS_FILE).open() as b:
        trained, again = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert [r["predicted"] for r in trained] == [r["predicted"] for r in again]
    assert np.allclose([float(r["probability"]) for r in trained], [float(r["probability"]) for r in again],
                       atol=1e-4)
    # A merged export of the adapter scores the same.
    merged = export_merged(str(out), tmp_path / "merged")
    exported = evaluation.score_adapter(str(merged), tmp_path / "scored-merged", data={
        "dataset_name": str(AG_NEWS), "test_split": "test", "max_test_samples": TEST_ROWS})
    assert exported["test_confusion_matrix"] == metrics["test_confusion_matrix"]
    assert exported["test_accuracy"] == metrics["test_accuracy"]


def test_score_py_on_a_labelled_file(agnews_run, tmp_path):
    """score.py end to end on a CSV with label names: the predictions file's own accuracy and macro-F1 are
    metrics.json's, and the confusion matrix counts every row once."""
    out, _, _ = agnews_run
    names = ["World", "Sports", "Business", "Sci/Tech"]
    rows = datasets.load_dataset(str(AG_NEWS), split="test").select(range(100, 160))
    path = tmp_path / "labelled.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["headline", "topic"])
        writer.writerows([t, names[y]] for t, y in zip(rows["text"], rows["label"]))
    proc = run_script("score.py", "--adapter", str(out), "--file", str(path), "--label_column_name", "topic",
                      "--text_column_names", "headline", "--output_dir", str(tmp_path / "scored"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "scored" / METRICS_FILE).read_text())
    with (tmp_path / "scored" / PREDICTIONS_FILE).open() as fh:
        predicted = list(csv.DictReader(fh))
    assert len(predicted) == metrics["test_rows"] == 60
    assert [r["text"] for r in predicted] == rows["text"]
    gold, guess = [r["gold"] for r in predicted], [r["predicted"] for r in predicted]
    assert metrics["test_accuracy"] == pytest.approx(np.mean([g == p for g, p in zip(gold, guess)]), abs=1e-12)
    assert metrics["test_f1_macro"] == pytest.approx(f1_score(gold, guess, labels=names, average="macro"), abs=1e-12)
    matrix = np.array(metrics["test_confusion_matrix"])
    assert matrix.sum() == 60 and matrix.sum(axis=1).tolist() == [gold.count(n) for n in names]
    assert (tmp_path / "scored" / CONFUSION_FILE).stat().st_size > 0


def test_score_refuses_bad_rows_before_loading(agnews_run, tmp_path):
    out, _, _ = agnews_run
    missing = tmp_path / "missing.csv"
    missing.write_text("text,topic\nStocks rally,Business\n")
    with pytest.raises(UsageError, match="column 'label' not found in the test data"):
        evaluation.score_adapter(str(out), tmp_path / "a", data={"test_file": str(missing)})
    outside = tmp_path / "outside.csv"
    outside.write_text("text,label\nStocks rally,Business\nRain again,Weather\n")
    with pytest.raises(UsageError, match="label 'Weather' in test row 1 is not in the task's label set"):
        evaluation.score_adapter(str(out), tmp_path / "b", data={"test_file": str(outside)})
    with pytest.raises(UsageError, match="inside the adapter's folder"):
        evaluation.score_adapter(str(out), out / "scores", data={"test_file": str(outside)})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_test_file_without_the_label_column_fails_before_training(tiny_roberta, tmp_path):
    bad = tmp_path / "test.csv"
    bad.write_text("sentence,gold\nfine,1\n")
    resolved = parse_recipe(["--task", "sst2", "--model_name_or_path", str(tiny_roberta), "--dataset_name",
                             str(GLUE), "--test_file", str(bad), "--dry_run"])
    with pytest.raises(UsageError, match=r"column 'label' not found in the test data of test file"):
        train(resolved)


# ---------------------------------------------------------------------------------------------------------------
# Early stopping

def test_early_stopping_stops_when_the_metric_plateaus(tiny_roberta, tmp_path):
    # learning_rate 0: the metric never moves, so one evaluation without improvement ends the run.
    out = tmp_path / "run"
    resolved = parse_recipe(["--task", "sst2", "--model_name_or_path", str(tiny_roberta), "--dataset_name",
                             str(GLUE), *QUICK, "--eval_strategy", "steps",
                             "--eval_steps", "1", "--save_strategy", "steps", "--save_steps", "1",
                             "--learning_rate", "0", "--early_stopping_patience", "1", "--output_dir", str(out)])
    metrics = train(resolved)
    assert metrics["max_steps"] == 4 and metrics["stopped_at_step"] == 2 and metrics["stopped_early"] is True
    assert metrics["best_model_checkpoint"] == "checkpoint-1"
    assert json.loads((out / METRICS_FILE).read_text())["stopped_at_step"] == 2


def test_early_stopping_needs_load_best_model_at_end(tiny_roberta, tmp_path):
    resolved = parse_recipe(["--task", "sst2", "--model_name_or_path", str(tiny_roberta), "--dataset_name",
                             str(GLUE), "--early_stopping_patience", "2", "--load_best_model_at_end", "false",
                             "--output_dir", str(tmp_path / "run")])
    with pytest.raises(UsageError, match="early_stopping_patience needs load_best_model_at_end"):
        train(resolved)


# ---------------------------------------------------------------------------------------------------------------
# Warm start from another adapter

def _sst2(model, *extra):
    return parse_recipe(["--task", "sst2", "--model_name_or_path", str(model), "--dataset_name", str(GLUE),
                         "--max_train_samples", "16", "--max_eval_samples", "16", "--max_seq_length", "64", *extra])


def test_warm_start_takes_the_lora_matrices_and_gives_a_new_head(agnews_run, tiny_roberta):
    out, _, _ = agnews_run
    source = load_file(str(out / "adapter_model.safetensors"))
    model = prepare(_sst2(tiny_roberta, "--init_adapter", str(out)))
    params = dict(model.named_parameters())
    lora = {k: v for k, v in source.items() if ".lora_" in k}
    assert len(lora) == 8 and any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)
    for key, value in lora.items():
        name = key.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")
        assert torch.equal(params[name].detach(), value), key
    # A new head: two labels where the source had four, and its dense layer is not the source's either.
    head = "base_model.model.classifier.modules_to_save.default."
    assert params[head + "out_proj.weight"].shape == (2, 32)
    assert source["base_model.model.classifier.out_proj.weight"].shape == (4, 32)
    assert not torch.equal(params[head + "dense.weight"].detach(), source["base_model.model.classifier.dense.weight"])


def test_warm_start_on_the_same_labels_takes_the_head_too(agnews_run, tiny_roberta):
    out, _, _ = agnews_run
    source = load_file(str(out / "adapter_model.safetensors"))
    model = prepare(agnews("--model_name_or_path", str(tiny_roberta), "--max_seq_length", "64",
                           "--max_train_samples", "16", "--init_adapter", str(out)))
    params = dict(model.named_parameters())
    for part in ("dense.weight", "out_proj.weight", "out_proj.bias"):
        assert torch.equal(params[f"base_model.model.classifier.modules_to_save.default.{part}"].detach(),
                           source[f"base_model.model.classifier.{part}"])


def test_warm_start_takes_the_body_modules_to_save_only_when_asked(tiny_models, tmp_path):
    # BERT trains its pooler beside the head (a module of the body): a source adapter whose pooler moved gives it
    # to the warm-started run with init_adapter_modules_to_save, and leaves the base's pooler in place without.
    from lorakit.runfolder import LabelInfo, write_labels

    bert = tiny_models["bert"]
    source = modeling.prepare(_sst2(bert).recipe, ["negative", "positive"])[1]
    with torch.no_grad():
        for name, param in source.named_parameters():
            if ".lora_" in name or ".pooler.modules_to_save." in name:
                param.add_(0.5)
    source.save_pretrained(tmp_path / "source")
    write_labels(tmp_path / "source", LabelInfo(label_names=["a", "b", "c"], text_columns=["sentence"]))
    pooler = "base_model.model.bert.pooler.modules_to_save.default.dense.weight"
    moved = dict(source.named_parameters())[pooler].detach()
    taken = dict(prepare(_sst2(bert, "--init_adapter", str(tmp_path / "source"),
                               "--init_adapter_modules_to_save", "true")).named_parameters())
    left = dict(prepare(_sst2(bert, "--init_adapter", str(tmp_path / "source"))).named_parameters())
    assert torch.equal(taken[pooler].detach(), moved)
    assert not torch.equal(left[pooler].detach(), moved)
    lora_b = next(n for n in taken if ".lora_B." in n)
    assert torch.equal(taken[lora_b].detach(), left[lora_b].detach()) and taken[lora_b].abs().min() > 0


def test_warm_start_from_another_base_or_other_targets_is_refused(agnews_run, tiny_roberta, tmp_path):
    out, _, _ = agnews_run
    other = make_tiny_model("roberta", tmp_path / "other-roberta", seed=1)
    with pytest.raises(UsageError, match=rf"trained on base model '{tiny_roberta}'.*model_name_or_path is '{other}'"):
        prepare(_sst2(other, "--init_adapter", str(out)), load_weights=False)
    with pytest.raises(UsageError, match=r"adapts query,value \(4 modules\) but the run adapts key,query,value "
                                         r"\(6 modules\)"):
        prepare(_sst2(tiny_roberta, "--init_adapter", str(out), "--lora_target_modules", "query,key,value"),
                         load_weights=False)
    with pytest.raises(UsageError, match="has LoRA rank 8 but the run's lora_r is 4"):
        prepare(_sst2(tiny_roberta, "--init_adapter", str(out), "--lora_r", "4"), load_weights=False)


def test_the_model_card_reports_the_test_split(agnews_run):
    from lorakit.hub import build_card, read_run

    out, metrics, _ = agnews_run
    card = str(build_card(read_run(out), "user/agnews"))
    assert f"On {TEST_ROWS} of 7,600 rows of the test split:" in card
    assert f"| {metrics['test_accuracy']:.4f} |" in card
    assert "split: test" in card


def test_regression_and_multi_label_are_scored_with_their_own_files(tmp_path):
    from scipy.stats import pearsonr

    from lorakit.runfolder import SCATTER_FILE, LabelInfo

    texts = [("a",), ("b",), ("c",), ("d",)]
    # Regression: pearson of the one output against the gold scores, a scatter plot, no class report.
    info = LabelInfo(label_names=["score"], text_columns=["text"], problem_type="regression")
    gold, out = np.array([0.5, 1.0, 3.0, 4.5]), np.array([[0.7], [0.9], [2.5], [4.9]])
    scored = evaluation.score(texts, gold, out, info, ["pearson"])
    assert scored.metrics["test_pearson"] == pytest.approx(pearsonr(out[:, 0], gold).statistic, abs=1e-6)
    evaluation.write_files(tmp_path, scored)
    assert (tmp_path / SCATTER_FILE).stat().st_size > 0 and not (tmp_path / CLASS_REPORT_FILE).exists()
    rows = list(csv.DictReader((tmp_path / PREDICTIONS_FILE).open()))
    assert [float(r["predicted"]) for r in rows] == pytest.approx(out[:, 0].tolist())
    # Multi-label: labels over the threshold, a per-label report.
    info = LabelInfo(label_names=["x", "y", "z"], text_columns=["text"], problem_type="multi_label_classification",
                     threshold=0.5)
    gold = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=np.float32)
    logits = np.array([[3, -3, 2], [-2, 1, -1], [2, -1, -3], [-1, -1, 4]], dtype=np.float32)
    scored = evaluation.score(texts, gold, logits, info, ["f1_micro", "exact_match"])
    assert scored.metrics["test_exact_match"] == 0.75 and scored.metrics["test_f1_micro"] == pytest.approx(10 / 11)
    assert scored.metrics["test_report"]["y"]["recall"] == 0.5 and scored.metrics["test_report"]["z"]["support"] == 2
    out_dir = tmp_path / "multi"
    out_dir.mkdir()
    evaluation.write_files(out_dir, scored)
    rows = list(csv.DictReader((out_dir / PREDICTIONS_FILE).open()))
    assert [(r["gold"], r["predicted"]) for r in rows] == [("x;z", "x;z"), ("y", "y"), ("x;y", "x"), ("z", "z")]
    assert "| y | 1.0000 | 0.5000 |" in (out_dir / CLASS_REPORT_FILE).read_text()
