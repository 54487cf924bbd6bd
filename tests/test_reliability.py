"""Reliability of training runs: kill -9 then resume gives the uninterrupted result, runs are deterministic,
final files appear all or nothing, and the Hub token is written nowhere."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import GLUE, REPO, run_script, tree
from lorakit.fileio import staged_folder
from lorakit.training import last_complete_checkpoint

# Small enough to finish in seconds, long enough (4 checkpoints) to be killed half way.
RUN = ["--task", "sst2", "--dataset_name", str(GLUE), "--max_train_samples", "128", "--max_eval_samples", "64",
       "--num_train_epochs", "2", "--per_device_train_batch_size", "16", "--max_seq_length", "64",
       "--eval_strategy", "steps", "--eval_steps", "4", "--save_strategy", "steps", "--save_steps", "4",
       "--logging_steps", "2", "--save_total_limit", "2", "--load_best_model_at_end", "false"]
COMPARED = ("eval_loss", "eval_accuracy", "train_loss", "trainable_params", "total_params", "best_eval_accuracy")


def _train(model: Path, out: Path, *extra: str) -> dict:
    proc = run_script("train.py", *RUN, "--model_name_or_path", str(model), "--output_dir", str(out), *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def _clock(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["TrainClock"]["attributes"]


@pytest.fixture(scope="module")
def reference_folder(tiny_roberta, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ref") / "run"
    _train(tiny_roberta, folder)
    return folder


@pytest.fixture(scope="module")
def reference(reference_folder) -> dict:
    return json.loads((reference_folder / "metrics.json").read_text())


def test_same_seed_same_metrics(reference, tiny_roberta, tmp_path):
    again = _train(tiny_roberta, tmp_path / "again")
    assert {k: again[k] for k in COMPARED} == {k: reference[k] for k in COMPARED}


def test_kill_9_then_resume_matches_the_uninterrupted_run(reference, reference_folder, tiny_roberta, tmp_path):
    # The run overwrites an earlier one: it trains beside it (.killed.next) and takes its place only when complete,
    # so the kill leaves the earlier run whole, and the resume finds the new run's checkpoints.
    out = tmp_path / "killed"
    shutil.copytree(reference_folder, out)
    earlier = {name: (out / name).read_bytes() for name in ("metrics.json", "adapter_model.safetensors")}
    before = tree(out)
    work = tmp_path / ".killed.next"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "train.py", *RUN, "--model_name_or_path", str(tiny_roberta),
                             "--output_dir", str(out), "--overwrite_output_dir"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        # trainer_state.json is the last file Trainer writes into a checkpoint: the checkpoint is complete.
        while not (work / "checkpoint-4" / "trainer_state.json").exists():
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.time() < deadline, "no checkpoint within 5 minutes"
            time.sleep(0.05)
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (work / "metrics.json").exists(), "the run finished before it could be killed"
    assert tree(out) == before  # the earlier run, untouched
    clock = _clock(work / "checkpoint-4")
    assert clock["segments"] == 1 and clock["seconds"] > 0

    resumed = _train(tiny_roberta, out, "--resume_from_checkpoint", "latest")
    assert not work.exists() and not (tmp_path / ".killed.old").exists()
    assert (out / "metrics.json").read_bytes() != earlier["metrics.json"]  # the new run's files, whole
    assert (out / "checkpoint-16" / "trainer_state.json").is_file()  # the new run's checkpoints came with it
    assert {k: resumed[k] for k in COMPARED if k != "train_loss"} == \
           {k: reference[k] for k in COMPARED if k != "train_loss"}
    # train_loss is the whole run's mean step loss: the sum up to the checkpoint (the clock's) plus the rest.
    assert resumed["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-6)
    # Its timings cover both segments: the seconds up to the checkpoint it resumed from, then the rest.
    assert "train_segments" not in reference and resumed["train_segments"] == 2
    assert resumed["train_runtime"] > clock["seconds"]
    assert resumed["train_samples_per_second"] == pytest.approx(128 * 2 / resumed["train_runtime"], rel=1e-3)
    # The resumed half's log continues where the checkpoint stopped.
    steps = [e["step"] for e in json.loads((out / "log_history.json").read_text()) if "eval_loss" in e]
    assert steps == sorted(steps) and steps[-1] == 16


def test_resume_mid_second_epoch_sees_the_same_data_order(reference, tiny_roberta, tmp_path):
    # Step 12 is half way through epoch 2: the epoch's shuffle must be re-drawn exactly as the first run drew it.
    _train(tiny_roberta, tmp_path / "full", "--save_total_limit", "10")
    out = tmp_path / "run"
    out.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-12", out / "checkpoint-12")
    # As a kit from before the clock wrote it: the earlier segment's seconds are unknown, so none are claimed.
    state_file = out / "checkpoint-12" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["stateful_callbacks"]["TrainClock"]
    state_file.write_text(json.dumps(state))
    resumed = _train(tiny_roberta, out, "--resume_from_checkpoint", "latest")
    assert "train_segments" not in resumed
    # Without the clock, train_loss is Trainer's mean over the steps this process ran: it differs after a resume.
    assert {k: resumed[k] for k in COMPARED if k != "train_loss"} == \
           {k: reference[k] for k in COMPARED if k != "train_loss"}

    # With the clock, and with Trainer told to restore callbacks (it then swaps in a copy built from the state):
    # the whole run's metrics, train_loss included.
    again = tmp_path / "again"
    again.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-12", again / "checkpoint-12")
    resumed = _train(tiny_roberta, again, "--resume_from_checkpoint", "latest",
                     "--restore_callback_states_from_checkpoint", "true")
    assert resumed["train_segments"] == 2 and resumed["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-6)
    assert resumed["train_runtime"] > _clock(again / "checkpoint-12")["seconds"]


def test_length_grouped_order_depends_on_seed_and_epoch_only(tmp_path):
    import torch
    from transformers import TrainingArguments

    from lorakit.trainer import KitTrainer

    lengths = [(7 * i) % 50 + 1 for i in range(200)]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, seed=3, use_cpu=True,
                             train_sampling_strategy="group_by_length", report_to=[])
    trainer = KitTrainer(model=torch.nn.Linear(1, 1), args=args,
                         train_dataset=[{"input_ids": [0] * n} for n in lengths])
    sampler = trainer._get_train_sampler()

    def order(epoch, rng_seed):
        torch.manual_seed(rng_seed)  # each rank's global RNG differs (its own dropout seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 1) == order(0, 2) and sorted(order(0, 1)) == list(range(200))
    assert order(1, 1) == order(1, 2) != order(0, 1)


def test_latest_skips_a_checkpoint_killed_while_saving(tmp_path):
    for step, state in ((4, "{}"), (8, '{"global_st'), (12, None)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-x").mkdir()
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert last_complete_checkpoint(tmp_path / "missing") is None


def test_checkpoints_are_rotated(reference, tiny_roberta, tmp_path):
    out = tmp_path / "rot"
    _train(tiny_roberta, out)
    # save_total_limit 2 keeps the newest checkpoint and the best one (or the one before the newest).
    best = json.loads((out / "checkpoint-16" / "trainer_state.json").read_text())["best_model_checkpoint"]
    kept = {Path(best).name} if Path(best).name != "checkpoint-16" else {"checkpoint-12"}
    assert sorted(p.name for p in out.glob("checkpoint-*")) == sorted(kept | {"checkpoint-16"})


def test_staged_write_interrupted_leaves_the_old_folder_as_it_was(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("old")
    (out / "adapter_model.safetensors").write_bytes(b"old weights")
    before = tree(out)
    with pytest.raises(RuntimeError):
        with staged_folder(out, last="metrics.json") as stage:
            (stage / "adapter_model.safetensors").write_bytes(b"new weights")
            raise RuntimeError("killed while saving")
    assert tree(out) == before
    assert (out / "adapter_model.safetensors").read_bytes() == b"old weights"
    with staged_folder(out, last="metrics.json") as stage:
        (stage / "adapter_model.safetensors").write_bytes(b"new weights")
        (stage / "metrics.json").write_text("new")
    assert (out / "metrics.json").read_text() == "new" and sorted(p.name for p in out.iterdir()) == \
           ["adapter_model.safetensors", "metrics.json"]


@pytest.mark.parametrize("atomic", [True, False])
def test_swap_in_replaces_the_folder_whole(tmp_path, monkeypatch, atomic):
    from lorakit import fileio

    if not atomic:  # the two-rename path of systems without renameat2
        monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)
    dest, new = tmp_path / "run", fileio.next_folder(tmp_path / "run")
    for folder, content in ((dest, "old"), (new, "new")):
        (folder / "checkpoint-4").mkdir(parents=True)
        (folder / "metrics.json").write_text(content)
    (dest / "stale.txt").write_text("only in the old run")
    assert fileio.final_folder(new) == dest and fileio.final_folder(dest) == dest
    fileio.swap_in(new, dest)
    assert (dest / "metrics.json").read_text() == "new" and not (dest / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_hub_token_is_written_nowhere(tiny_roberta, tmp_path):
    sentinel = "hf_SENTINELtokenDoNotLeak0123456789"
    out = tmp_path / "run"
    proc = run_script("train.py", *RUN, "--model_name_or_path", str(tiny_roberta), "--output_dir", str(out),
                      "--max_train_samples", "32", env={"HF_TOKEN": sentinel, "HUGGING_FACE_HUB_TOKEN": sentinel})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sentinel not in proc.stdout + proc.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in files)  # checkpoints were written and are searched too
    for path in files:
        assert sentinel.encode() not in path.read_bytes(), path
