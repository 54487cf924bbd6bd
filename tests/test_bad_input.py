"""Bad input to train.py: one `error:` line naming the value and the fix, exit code 2, nothing written.

The table runs train.py's `main` in-process through the same `run_cli` wrapper the script uses (a subprocess
per case would spend most of the suite importing torch); one case runs the real script to prove the exit code
and the absence of a traceback end to end.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import AG_NEWS, GLUE, QUICK, REPO, make_tiny_model, run_script, tree
from lorakit.errors import run_cli

_spec = importlib.util.spec_from_file_location("train_script", REPO / "train.py")
train_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_script)


def _jsonl(labels: list) -> str:
    """JSON Lines rows of a sentence and a label each."""
    return "".join(json.dumps({"sentence": f"row {i}", "label": v}) + "\n" for i, v in enumerate(labels))


def _csv(path: Path, text: str, encoding: str = "utf-8") -> str:
    path.write_bytes(text.encode(encoding))
    return str(path)


# Each case: (id, argv builder(tmp, model) -> list[str], a fragment the message must contain).
CASES = [
    ("unknown task", lambda t, m: ["--task", "imdb"], "unknown task 'imdb'"),
    ("recipe file missing", lambda t, m: ["--config", str(t / "nope.yaml")], "not found"),
    ("malformed yaml", lambda t, m: ["--config", _csv(t / "bad.yaml", "a: [1\n")], "not valid YAML"),
    ("unknown key", lambda t, m: ["--task", "sst2", "--lora_rank", "8"], "unknown key '--lora_rank'"),
    ("mistyped key in file", lambda t, m: ["--config", _csv(t / "r.yaml", "dataset_name: x\nlearnig_rate: 1\n")],
     "unknown key 'learnig_rate'"),
    ("wrong value type", lambda t, m: ["--task", "sst2", "--warmup_steps", "a tenth"], "warmup_steps should be float"),
    ("lora_r not positive", lambda t, m: ["--task", "sst2", "--lora_r", "0"], "lora_r"),
    ("dropout out of range", lambda t, m: ["--task", "sst2", "--lora_dropout", "1.5"], "lora_dropout"),
    ("hub dataset offline", lambda t, m: ["--task", "sst2", "--model_name_or_path", str(m),
                                          "--dataset_name", "nobody/no-such-dataset"], "no-such-dataset"),
    ("local dataset missing", lambda t, m: ["--task", "sst2", "--model_name_or_path", str(m),
                                            "--dataset_name", "./no/such/folder"], "./no/such/folder"),
    ("text column missing", lambda t, m: ["--task", "sst2", "--model_name_or_path", str(m), "--dataset_name",
                                          str(GLUE), "--text_column_names", "review"], "column 'review' not found"),
    ("label column missing", lambda t, m: ["--task", "sst2", "--model_name_or_path", str(m), "--dataset_name",
                                           str(GLUE), "--label_column_name", "stars"], "column 'stars' not found"),
    ("label outside set", lambda t, m: ["--task", "sst2", "--model_name_or_path", str(m),
                                        "--train_file", _csv(t / "tr.csv", "sentence,label\ngood,1\nbad,7\n"),
                                        "--validation_file", _csv(t / "va.csv", "sentence,label\nok,0\n")],
     "label 7 in train row 1 is not a class id"),
    ("list label in a single-label task", lambda t, m: ["--task", "sst2", "--model_name_or_path", str(m),
                                                        "--train_file", _csv(t / "l.jsonl", _jsonl([1, [0, 1]])),
                                                        "--validation_file", _csv(t / "lv.jsonl", _jsonl([0]))],
     "label [0, 1] in train row 1 is a list, but the task is single-label"),
    ("scalar label in a multi-label task", lambda t, m: ["--task", "go_emotions", "--model_name_or_path", str(m),
                                                         "--train_file", _csv(t / "s.jsonl", _jsonl([[1], 2])),
                                                         "--validation_file", _csv(t / "sv.jsonl", _jsonl([[0]])),
                                                         "--text_column_names", "sentence", "--label_column_name",
                                                         "label"],
     "label 2 in train row 1 is a single value, but the task is multi-label"),
    ("unknown name in a label list", lambda t, m: ["--task", "go_emotions", "--model_name_or_path", str(m),
                                                   "--train_file", _csv(t / "u.jsonl", _jsonl([["joy", "glee"]])),
                                                   "--validation_file", _csv(t / "uv.jsonl", _jsonl([["joy"]])),
                                                   "--text_column_names", "sentence", "--label_column_name", "label"],
     "label 'glee' in train row 0 is not in the task's label set"),
    ("non-numeric regression target", lambda t, m: ["--task", "stsb", "--model_name_or_path", str(m),
                                                    "--train_file", _csv(t / "r.csv", "a,b,label\nx,y,3.5\nx,y,high\n"),
                                                    "--validation_file", _csv(t / "rv.csv", "a,b,label\nx,y,1\n"),
                                                    "--text_column_names", "a,b"],
     "label 'high' in train row 1 is not a number, but the task is a regression"),
    ("class_weights of the wrong length", lambda t, m: ["--task", "sst2", "--model_name_or_path", str(m),
                                                        "--dataset_name", str(GLUE), "--class_weights", "1,2,3"],
     "class_weights holds 3 numbers but the task has 2 labels"),
    ("class_weights not numbers", lambda t, m: ["--task", "sst2", "--class_weights", "1,heavy"],
     "class_weights should be balanced or one positive number per label"),
    ("threshold outside (0, 1)", lambda t, m: ["--task", "go_emotions", "--threshold", "1.2"],
     "threshold should be between 0 and 1 (exclusive) but the value passed is 1.2"),
    ("threshold on a single-label task", lambda t, m: ["--task", "sst2", "--threshold", "0.3"],
     "threshold applies to multi_label_classification but problem_type is single_label_classification"),
    ("metric of another problem type", lambda t, m: ["--task", "stsb", "--metrics", "accuracy"],
     "metrics for regression should be drawn from pearson, spearmanr"),
    ("f1 beyond two classes", lambda t, m: ["--task", "agnews", "--model_name_or_path", str(m), "--dataset_name",
                                            str(AG_NEWS), "--metrics", "f1"],
     "use f1_macro or f1_micro"),
    ("empty after filtering", lambda t, m: ["--task", "sst2", "--model_name_or_path", str(m),
                                            "--train_file", _csv(t / "e.csv", "sentence,label\n"),
                                            "--validation_file", _csv(t / "v.csv", "sentence,label\nok,0\n")],
     "holds no rows"),
    ("data file not utf-8", lambda t, m: ["--task", "sst2", "--model_name_or_path", str(m),
                                          "--train_file", _csv(t / "l1.csv", "sentence,label\ncaf\u00e9,1\n", "latin-1"),
                                          "--validation_file", _csv(t / "ok.csv", "sentence,label\nok,0\n")],
     "not UTF-8"),
    ("seq length over limit", lambda t, m: ["--task", "sst2", "--model_name_or_path", str(m), "--dataset_name",
                                            str(GLUE), "--max_seq_length", "4096"], "exceeds the model's limit"),
    ("target matches nothing", lambda t, m: ["--task", "sst2", "--model_name_or_path", str(m), "--dataset_name",
                                             str(GLUE), "--lora_target_modules", "q_proj"],
     "LoRA target module 'q_proj' matches nothing"),
    ("lora_layers out of range", lambda t, m: ["--task", "sst2", "--model_name_or_path", str(m), "--dataset_name",
                                               str(GLUE), "--lora_layers", "0-5"], "lora_layers [2, 3, 4, 5] out of range"),
    ("budget exceeded", lambda t, m: ["--task", "agnews", "--model_name_or_path", str(m), "--dataset_name",
                                      str(AG_NEWS), "--max_seq_length", "64", "--max_trainable_params", "10"],
     "over max_trainable_params 10"),
    ("model folder missing", lambda t, m: ["--task", "sst2", "--model_name_or_path", "./no/model",
                                           "--dataset_name", str(GLUE)], "model folder './no/model' not found"),
    ("eval split missing", lambda t, m: ["--task", "sst2", "--model_name_or_path", str(m), "--dataset_name",
                                         str(GLUE), "--eval_split", "test"], "has no split 'test'"),
    ("resume without checkpoint", lambda t, m: ["--task", "sst2", "--model_name_or_path", str(m), "--dataset_name",
                                                str(GLUE), "--resume_from_checkpoint", "latest"], "found no checkpoint"),
]


@pytest.mark.parametrize("builder, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(builder, fragment, tiny_roberta, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / "out"
    argv = [*QUICK, "--output_dir", str(out), *builder(inputs, tiny_roberta)]  # the case's flags win
    before = tree(tmp_path)
    code = run_cli(train_script.main, argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], err[-2000:]
    assert fragment in lines[-1], lines[-1]
    assert tree(tmp_path) == before, "a failed run wrote or changed files"


def test_output_folder_holding_another_run_is_refused_and_left_alone(tiny_roberta, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"eval_accuracy": 0.9}')
    (out / "adapter_config.json").write_text("{}")
    before = tree(out)
    code = run_cli(train_script.main, ["--task", "sst2", "--model_name_or_path", str(tiny_roberta),
                                       "--dataset_name", str(GLUE), *QUICK, "--output_dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: output_dir") and "--overwrite_output_dir" in err[-1]
    assert tree(out) == before and (out / "metrics.json").read_text() == '{"eval_accuracy": 0.9}'


def test_real_script_exits_2_without_traceback(tmp_path):
    proc = run_script("train.py", "--task", "sst2", "--lora_r", "-3", "--output_dir", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[-1]]
    assert proc.stderr.startswith("error: lora_r") and "-3" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_debug_flag_shows_the_traceback(tmp_path):
    proc = run_script("train.py", "--task", "sst2", "--lora_r", "-3", "--debug")
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "error: lora_r" in proc.stderr


def test_config_only_model_cannot_train(tmp_path, capsys):
    folder = make_tiny_model("roberta", tmp_path / "cfg", weights=False)
    code = run_cli(train_script.main, ["--task", "sst2", "--model_name_or_path", str(folder), "--dataset_name",
                                       str(GLUE), *QUICK, "--output_dir", str(tmp_path / "o")])
    assert code == 2
    assert "could not be loaded" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
