"""Multi-process training and the shipped accelerate configs.

Runs here (CPU only): `accelerate launch` of train.py with configs/accelerate/multi_gpu.yaml, which without a
GPU starts 2 DDP processes over gloo, and the foundation issue's literal `accelerate launch --num_processes 2
--cpu`, which accelerate 1.15 runs as ONE process (it fans CPU processes out only under mpirun). Both must
write one complete output folder whose metrics cover the whole eval set. FSDP and DeepSpeed need a GPU (accelerate
builds FSDP only over accelerators; DeepSpeed is not installed): their configs are checked through accelerate's
own config loader and launcher.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import GLUE, REPO, run_script
from lorakit import data as data_lib
from lorakit.recipe import Recipe

ACCELERATE_DIR = REPO / "configs" / "accelerate"
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "labels.json", "recipe.yaml", "metrics.json", "log_history.json", "learning_curve.png"}
# 32 eval rows in batches of 8: each of 2 ranks evaluates 16 of them, so half the set would show in the loss.
RUN = ["--task", "sst2", "--dataset_name", str(GLUE), "--max_train_samples", "64", "--max_eval_samples", "32",
       "--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
       "--max_seq_length", "64", "--logging_steps", "1", "--bf16", "false"]
LAUNCHES = {
    "ddp-2-processes": (["--config_file", str(ACCELERATE_DIR / "multi_gpu.yaml")], 2),
    "cpu-flag-1-process": (["--num_processes", "2", "--cpu"], 1),
}


@pytest.fixture(scope="module", params=list(LAUNCHES))
def launched(request, tiny_roberta, tmp_path_factory):
    launch, processes = LAUNCHES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    proc = run_script("-m", "accelerate.commands.launch", *launch, "train.py", *RUN,
                      "--model_name_or_path", str(tiny_roberta), "--output_dir", str(root / "run"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root, processes, proc.stdout + proc.stderr


def test_processes_and_one_complete_output_folder(launched):
    root, processes, log = launched
    assert f"x {processes} process(es)" in log
    assert [p.name for p in root.iterdir()] == ["run"]
    out = root / "run"
    names = {p.name for p in out.iterdir()}
    assert ADAPTER_FILES <= names and not any(n.startswith(".") for n in names), names
    checkpoints = [n for n in names if n.startswith("checkpoint-")]
    assert checkpoints == [f"checkpoint-{64 // (8 * processes)}"]
    # Only the main process saves: one "saved" line (the others log warnings only).
    assert len(re.findall(r"saved adapter and metrics to", log)) == 1


def test_ranks_draw_their_own_random_numbers(launched):
    root, processes, _ = launched
    if processes == 1:
        pytest.skip("one process")
    # Trainer saves each rank's RNG state in the checkpoint. Training never draws from Python's RNG, so rank r's
    # is still where set_seed(seed + r) put it: each rank seeded with its own number, the recipe's seed (42) + r.
    import random

    checkpoint = next((root / "run").glob("checkpoint-*"))
    states = [torch.load(checkpoint / f"rng_state_{rank}.pth", weights_only=False) for rank in range(processes)]
    for rank, state in enumerate(states):
        random.seed(42 + rank)
        assert state["python"] == random.getstate(), rank
    assert not torch.equal(states[0]["cpu"], states[1]["cpu"])


def test_metrics_are_the_main_process_report_over_the_whole_eval_set(launched, tiny_roberta):
    root, _, log = launched
    out = root / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    last_eval = [e for e in json.loads((out / "log_history.json").read_text()) if "eval_loss" in e][-1]
    assert {k: metrics[k] for k in ("eval_loss", "eval_accuracy")} == \
        {k: last_eval[k] for k in ("eval_loss", "eval_accuracy")}
    printed = re.search(r"saved adapter and metrics to .*: eval accuracy = ([\d.]+)", log)
    assert printed and float(printed[1]) == round(metrics["eval_accuracy"], 4)

    # The saved adapter, evaluated in this one process on all 32 rows, gives the run's figures.
    recipe = Recipe(**{k: v for k, v in yaml.safe_load((out / "recipe.yaml").read_text()).items()
                       if k in Recipe.__dataclass_fields__})
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    task = data_lib.tokenize(data_lib.load_task_data(recipe), tokenizer, recipe)
    assert len(task.eval) == 32
    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_roberta), num_labels=2)
    model = PeftModel.from_pretrained(base, str(out)).eval()
    batch = data_lib.PaddingCollator(tokenizer)([task.eval[i] for i in range(len(task.eval))])
    with torch.no_grad():
        output = model(**batch)
    accuracy = (output.logits.argmax(-1) == batch["labels"]).float().mean().item()
    assert metrics["eval_loss"] == pytest.approx(output.loss.item(), abs=1e-5)
    assert metrics["eval_accuracy"] == pytest.approx(accuracy)


# ---------------------------------------------------------------------------------------------------------------
# The shipped accelerate configs, as accelerate itself reads them.

EXPECTED = {"single_gpu": "NO", "multi_gpu": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero2": "DEEPSPEED",
            "deepspeed_zero3": "DEEPSPEED"}


def _launch_args(path: Path):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py", "--task", "sst2"])
    return _validate_launch_command(args)[0]


def test_every_config_is_shipped_and_documented():
    assert {p.stem for p in ACCELERATE_DIR.glob("*.yaml")} == set(EXPECTED)
    for name in EXPECTED:
        text = (ACCELERATE_DIR / f"{name}.yaml").read_text()
        assert f"accelerate launch --config_file configs/accelerate/{name}.yaml" in text, name
        assert "train.py --task" in text, name


@pytest.mark.parametrize("name", list(EXPECTED))
def test_config_loads_with_accelerate(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ACCELERATE_DIR / f"{name}.yaml"))
    assert config.distributed_type.value == EXPECTED[name]
    # Precision is the kit's decision (bf16 where supported, or the recipe's keys), not the launcher's.
    assert config.mixed_precision == "no"
    args = _launch_args(ACCELERATE_DIR / f"{name}.yaml")
    assert (args.multi_gpu, args.use_fsdp, args.use_deepspeed) == (
        name == "multi_gpu", name == "fsdp", name.startswith("deepspeed"))
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])


def test_fsdp_config_builds_accelerates_fsdp_plugin(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    env = prepare_multi_gpu_env(_launch_args(ACCELERATE_DIR / "fsdp.yaml"))
    assert env["ACCELERATE_USE_FSDP"] == "true"
    for key, value in env.items():
        if key.startswith("FSDP_"):
            monkeypatch.setenv(key, value)
    # sync_module_states places parameters on an accelerator, which this machine lacks; everything else is built.
    monkeypatch.setenv("FSDP_SYNC_MODULE_STATES", "false")
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.sharding_strategy.name == "FULL_SHARD"
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"
    # PEFT: frozen and trainable weights in one wrapped unit need the original parameters kept.
    assert plugin.use_orig_params is True
