"""Sweeps from train.py: a 2x2 grid end to end, resuming it, the budget filter, and sweep syntax errors."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest

from conftest import GLUE, QUICK, REPO, make_tiny_model, run_script, tree
from lorakit import sweep
from lorakit.errors import run_cli
from lorakit.recipe import parse_recipe

_spec = importlib.util.spec_from_file_location("train_script", REPO / "train.py")
train_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_script)

SST2 = ["--task", "sst2", "--dataset_name", str(GLUE)]
GRID = ["--sweep", "lora_r=2,4", "--sweep", "lora_target_modules=query,query+value"]
NAMES = ["lora_r=2,lora_target_modules=query", "lora_r=2,lora_target_modules=query+value",
         "lora_r=4,lora_target_modules=query", "lora_r=4,lora_target_modules=query+value"]
RESULT_FILES = {"results.csv", "results.md", "eval_curves.png", "best_metric.png", "metric_vs_params.png",
                "sweep.json"}


def _rows(out) -> list[dict]:
    with open(out / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], stderr[-2000:]
    return lines[-1]


def test_2x2_sweep_end_to_end_then_resumed_without_training_anything_twice(tiny_models, tmp_path):
    out = tmp_path / "sweep"
    argv = [*SST2, "--model_name_or_path", str(tiny_models["bert"]), *QUICK, "--output_dir", str(out), *GRID]
    proc = run_script("train.py", *argv)
    assert proc.returncode == 0, proc.stderr[-3000:]

    assert {p.name for p in out.iterdir()} == set(NAMES) | RESULT_FILES
    for name in NAMES:
        written = {p.name for p in (out / name).iterdir()}
        assert {"adapter_model.safetensors", "metrics.json", "log_history.json"} <= written
    rows = _rows(out)
    assert [r["setting"] for r in rows] == NAMES
    assert [(r["lora_r"], r["lora_target_modules"]) for r in rows] == [
        ("2", "query"), ("2", "query+value"), ("4", "query"), ("4", "query+value")]
    assert {r["status"] for r in rows} == {"trained"}
    for row in rows:
        metrics = json.loads((out / row["setting"] / "metrics.json").read_text())
        assert float(row["best_eval_accuracy"]) == pytest.approx(metrics["best_eval_accuracy"])
        assert float(row["eval_accuracy"]) == pytest.approx(metrics["eval_accuracy"])
        assert int(row["trainable_params"]) == metrics["trainable_params"]
    # r=2 on two targets trains as many LoRA weights as r=4 on one; everything else differs.
    assert len({r["trainable_params"] for r in rows}) == 3
    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 2 + len(NAMES) and all(f"| {name} |" in table[2 + i] for i, name in enumerate(NAMES))
    for png in ("eval_curves.png", "best_metric.png", "metric_vs_params.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The counts planned before any weights load equal what each real run reported.
    for setting in sweep.plan(parse_recipe(argv)):
        metrics = json.loads((setting.folder / "metrics.json").read_text())
        assert (setting.params.trainable, setting.params.total) == (metrics["trainable_params"],
                                                                    metrics["total_params"])

    # One run cut off after its checkpoint (no metrics.json, which is written last); the others finished.
    interrupted = out / NAMES[3]
    (interrupted / "metrics.json").unlink()
    assert (interrupted / "checkpoint-4" / "trainer_state.json").is_file()
    before = tree(out)
    proc = run_script("train.py", *argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = tree(out)
    changed = {path.split("/")[0] for path in after if before.get(path) != after[path]}
    assert changed == {NAMES[3]} | RESULT_FILES
    assert f"resuming {NAMES[3]} from checkpoint-4" in proc.stderr
    assert proc.stderr.count("sweep: run ") == 1
    assert (interrupted / "metrics.json").is_file()
    rows = _rows(out)
    assert [r["status"] for r in rows] == ["reused", "reused", "reused", "resumed"]
    assert all(float(r["train_runtime_s"]) > 0 and float(r["train_samples_per_second"]) > 0 for r in rows)

    # Runs recorded by an older kit, before a key was added: at its default the key changed nothing, so they are
    # reused; set to anything else it is a change like any other.
    record = json.loads((out / "sweep.json").read_text())
    for run in record["runs"].values():
        assert run["recipe"].pop("head_learning_rate") is None
    (out / "sweep.json").write_text(json.dumps(record))
    proc = run_script("train.py", *argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["status"] for r in _rows(out)] == ["reused"] * 4
    proc = run_script("train.py", *argv, "--head_learning_rate", "1e-4")
    assert proc.returncode == 2 and "head_learning_rate" in _one_error_line(proc.stderr)

    # A changed flag would mix old and new runs in one table: refused before anything trains.
    before = tree(out)
    proc = run_script("train.py", *argv, "--learning_rate", "1e-4")
    assert proc.returncode == 2
    assert "learning_rate" in _one_error_line(proc.stderr)
    assert tree(out) == before


def test_over_budget_setting_is_skipped_and_listed_before_any_weights_load(tmp_path, monkeypatch, capsys):
    # config.json only: building the real model would fail, so planning must not touch weights.
    model = make_tiny_model("bert", tmp_path / "config-only", weights=False)
    out = tmp_path / "sweep"
    handed_to_training = []
    monkeypatch.setattr(train_script, "train", lambda resolved: handed_to_training.append(resolved.recipe.lora_r))
    argv = [*SST2, "--model_name_or_path", str(model), *QUICK, "--output_dir", str(out),
            "--sweep", "lora_r=2,64", "--max_trainable_params", "2000"]
    assert run_cli(train_script.main, argv) == 0
    assert handed_to_training == [2]
    assert not (out / "lora_r=64").exists()
    assert "skipping 1 over max_trainable_params 2,000: lora_r=64 (17,506)" in capsys.readouterr().err
    rows = {r["setting"]: r for r in _rows(out)}
    assert rows["lora_r=64"]["status"] == "over budget"
    # 2 layers x 2 targets x 2 x 64 x 32, the classifier 66 and BERT's pooler 32 x 32 + 32.
    assert int(rows["lora_r=64"]["trainable_params"]) == 16_384 + 66 + 1_056
    assert "| lora_r=64 | 17,506 |" in (out / "results.md").read_text()


# Each case: (id, sweep flags, a fragment the one-line error must contain).
BAD = [
    ("no equals sign", ["--sweep", "lora_r"], "--sweep 'lora_r' should be KEY=V1,V2"),
    ("unknown key", ["--sweep", "lora_rank=2,4"], "unknown key 'lora_rank' (did you mean lora_r?)"),
    ("empty value list", ["--sweep", "lora_r="], "has an empty value"),
    ("empty value in list", ["--sweep", "lora_r=2,,4"], "has an empty value"),
    ("wrong type", ["--sweep", "lora_r=2,four"], "lora_r cannot take the value 'four' (it should be int)"),
    ("zipped keys, value short", ["--sweep", "method:learning_rate=lora:1e-3,full"],
     "value 'full' should give 2 values joined by ':'"),
    ("not sweepable", ["--sweep", "output_dir=a,b"], "output_dir is set by the sweep"),
    ("key swept twice", ["--sweep", "lora_r=2", "--sweep", "lora_r=4"], "lora_r is swept twice"),
    ("value repeated", ["--sweep", "lora_r=2,2"], "lists '2' twice"),
    ("invalid for the kit", ["--sweep", "lora_r=0,2"], "sweep setting lora_r=0: lora_r should be a positive"),
    ("target matches nothing", ["--sweep", "lora_target_modules=query,q_proj"],
     "sweep setting lora_target_modules=q_proj: LoRA target module 'q_proj' matches nothing"),
    ("all over budget", ["--sweep", "lora_r=2,4", "--max_trainable_params", "10"],
     "every sweep setting trains more than max_trainable_params 10 (the smallest, lora_r=2, trains 1,634)"),
]


@pytest.mark.parametrize("flags, fragment", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_sweep_is_one_line_error_before_anything_is_written(flags, fragment, tiny_models, tmp_path, capsys):
    argv = [*SST2, "--model_name_or_path", str(tiny_models["bert"]), *QUICK, "--output_dir", str(tmp_path / "out"),
            *flags]
    before = tree(tmp_path)
    assert run_cli(train_script.main, argv) == 2
    assert fragment in _one_error_line(capsys.readouterr().err)
    assert tree(tmp_path) == before


def test_folder_names_are_filesystem_safe_and_distinct():
    assert sweep.folder_name([("lora_r", "8"), ("learning_rate", "5e-4")]) == "lora_r=8,learning_rate=5e-4"
    a = sweep.folder_name([("model_name_or_path", "org/model")])
    b = sweep.folder_name([("model_name_or_path", "org_model")])
    assert "/" not in a and a != b and a.startswith("model_name_or_path=org_model-")


def test_a_joint_grid_sets_lora_only_keys_for_lora_and_unsets_them_for_full(tiny_models, tmp_path):
    # `none` unsets an optional key and `false` a flag, so one sweep holds LoRA variants and the full baseline.
    argv = [*SST2, "--model_name_or_path", str(tiny_models["bert"]), "--max_seq_length", "64",
            "--output_dir", str(tmp_path / "runs"),
            "--sweep", "method:loraplus_lr_ratio:use_dora=lora:16:true,full:none:false"]
    lora, full = sweep.plan(parse_recipe(argv))
    assert (lora.resolved.recipe.loraplus_lr_ratio, lora.resolved.recipe.use_dora) == (16.0, True)
    assert (full.resolved.recipe.method, full.resolved.recipe.loraplus_lr_ratio, full.resolved.recipe.use_dora) \
        == ("full", None, False)
    assert full.params.trainable == full.params.total > lora.params.trainable
