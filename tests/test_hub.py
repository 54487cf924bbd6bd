"""Publishing: the exact folder a Hub repo gets, its card read back by huggingface_hub's own parser, the HfApi calls
(only their network side replaced), and the token never written anywhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard, RepoUrl

from conftest import GLUE, QUICK, run_script, train_quick_sst2, tree
from lorakit import hub
from lorakit.errors import UsageError

SENTINEL = "hf_SENTINELtoken0123456789abcdefXYZ"
UPLOADED = {"README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "labels.json", "recipe.yaml", "metrics.json", "learning_curve.png"}


@pytest.fixture(scope="module")
def run_dir(tiny_roberta, tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "sst2"
    train_quick_sst2(tiny_roberta, out)
    return out


@pytest.fixture
def token(monkeypatch):
    """A sentinel token in HF_TOKEN, where huggingface_hub looks first."""
    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    return SENTINEL


@pytest.fixture
def hub_calls(monkeypatch):
    """Replace the network side of HfApi (and only that); record what each call got, and the uploaded files."""
    calls = []

    def create_repo(self, repo_id, *, private=None, exist_ok=False, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, "private": private, "exist_ok": exist_ok}))
        return RepoUrl(f"https://huggingface.co/{repo_id if '/' in repo_id else 'me/' + repo_id}")

    def update_repo_settings(self, repo_id, **kwargs):
        calls.append(("update_repo_settings", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        calls.append(("upload_folder", {"repo_id": repo_id, "files": files, **kwargs}))

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "update_repo_settings", update_repo_settings)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_dry_run_builds_exactly_the_upload_with_a_card_that_round_trips(run_dir, tmp_path):
    dest = tmp_path / "staged"
    before = tree(run_dir)
    proc = run_script("publish.py", "--output_dir", str(run_dir), "--hub_model_id", "someone/tiny-sst2",
                      "--base_model", "FacebookAI/roberta-base", "--dataset", "nyu-mll/glue", "--dry_run", str(dest),
                      env={"HF_TOKEN": SENTINEL})
    assert proc.returncode == 0, proc.stderr
    assert tree(run_dir) == before
    assert {p.name for p in dest.iterdir()} == UPLOADED
    for path in dest.iterdir():
        assert SENTINEL.encode() not in path.read_bytes(), path.name
    assert SENTINEL not in proc.stdout + proc.stderr

    card = ModelCard.load(dest / "README.md")
    data = card.data.to_dict()
    assert ModelCard(str(card)).data.to_dict() == data  # metadata round-trips through the Hub's parser
    assert data["library_name"] == "peft" and data["pipeline_tag"] == "text-classification"
    assert data["base_model"] == "FacebookAI/roberta-base" and data["datasets"] == ["nyu-mll/glue"]
    assert {"lora", "peft", "sst2"} <= set(data["tags"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result = card.data.eval_results[0]
    assert (result.metric_type, result.dataset_type, result.dataset_config, result.dataset_split) == \
        ("accuracy", "nyu-mll/glue", "sst2", "validation")
    assert result.metric_value == pytest.approx(metrics["eval_accuracy"], abs=1e-4)
    assert f"{metrics['trainable_params']:,}" in card.text
    assert "python infer.py --adapter someone/tiny-sst2" in card.text
    assert "AutoPeftModelForSequenceClassification.from_pretrained(\"someone/tiny-sst2\", num_labels=2)" in card.text
    # The uploaded adapter names the Hub backbone; the run's own copy still names the local one.
    staged_config = json.loads((dest / "adapter_config.json").read_text())
    assert staged_config["base_model_name_or_path"] == "FacebookAI/roberta-base"
    assert yaml.safe_load((dest / "recipe.yaml").read_text()) == yaml.safe_load((run_dir / "recipe.yaml").read_text())


def test_local_base_model_is_left_out_of_the_metadata_with_a_warning(run_dir, tmp_path):
    proc = run_script("publish.py", "--output_dir", str(run_dir), "--hub_model_id", "someone/x",
                      "--dry_run", str(tmp_path / "staged"))
    assert proc.returncode == 0, proc.stderr
    assert "--base_model" in proc.stderr
    data = ModelCard.load(tmp_path / "staged" / "README.md").data.to_dict()
    assert "base_model" not in data and "datasets" not in data  # local paths are no Hub ids


def test_push_sends_the_staged_folder_to_the_repo_it_created(run_dir, token, hub_calls):
    url = hub.push(run_dir, "someone/tiny-sst2", private=True, base_model="FacebookAI/roberta-base")
    assert url == "https://huggingface.co/someone/tiny-sst2"
    names = [name for name, _ in hub_calls]
    assert names == ["create_repo", "update_repo_settings", "upload_folder"]
    assert hub_calls[0][1] == {"repo_id": "someone/tiny-sst2", "private": True, "exist_ok": True}
    assert hub_calls[1][1] == {"repo_id": "someone/tiny-sst2", "private": True}
    upload = hub_calls[2][1]
    assert upload["repo_id"] == "someone/tiny-sst2" and set(upload["files"]) == UPLOADED
    assert all(token.encode() not in data for data in upload["files"].values())
    card = ModelCard(upload["files"]["README.md"].decode())
    assert card.data.model_name == "someone/tiny-sst2"


def test_push_run_from_train_pushes_the_output_folder_public_by_default(run_dir, token, hub_calls):
    from lorakit.recipe import parse_recipe

    # A bare repo name: the Hub puts it under the user's namespace, and the card uses the full id.
    resolved = parse_recipe(["--config", str(run_dir / "recipe.yaml"), "--push_to_hub", "true",
                             "--hub_model_id", "tiny-sst2"])
    hub.check_push(resolved)
    hub.push_run(resolved)
    assert [name for name, _ in hub_calls] == ["create_repo", "upload_folder"]
    assert hub_calls[0][1]["private"] is None  # the account's default visibility
    upload = hub_calls[1][1]
    assert upload["repo_id"] == "me/tiny-sst2"
    assert "python infer.py --adapter me/tiny-sst2" in upload["files"]["README.md"].decode()
    assert upload["files"]["metrics.json"] == (run_dir / "metrics.json").read_bytes()


def test_a_token_in_a_run_file_is_refused(run_dir, token, tmp_path, hub_calls):
    leaky = tmp_path / "leaky"
    shutil.copytree(run_dir, leaky, ignore=shutil.ignore_patterns("checkpoint-*"))
    with (leaky / "recipe.yaml").open("a") as fh:
        fh.write(f"run_name: {token}\n")
    with pytest.raises(UsageError, match="recipe.yaml of the run holds your Hugging Face token"):
        hub.push(leaky, "someone/x")
    assert not any(name == "upload_folder" for name, _ in hub_calls)
    with pytest.raises(UsageError, match="holds your Hugging Face token"):
        hub.dry_run(leaky, tmp_path / "staged", repo_id="someone/x")
    assert tree(tmp_path / "staged") == {}


def test_train_with_push_but_no_token_stops_before_training(tiny_roberta, tmp_path):
    out = tmp_path / "run"
    proc = run_script("train.py", "--task", "sst2", "--model_name_or_path", str(tiny_roberta),
                      "--dataset_name", str(GLUE), *QUICK, "--output_dir", str(out), "--push_to_hub",
                      env={"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf-home")})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == ["error: --push_to_hub needs a Hugging Face token; run `hf auth "
                                                "login` or set HF_TOKEN"]
    assert not out.exists()


@pytest.mark.parametrize("args, fragment", [
    (lambda run, tmp: ["--output_dir", str(tmp / "nowhere"), "--hub_model_id", "a/b"], "not found"),
    (lambda run, tmp: ["--output_dir", str(next(run.glob("checkpoint-*"))), "--hub_model_id", "a/b"],
     "not a finished run"),
    (lambda run, tmp: ["--output_dir", str(run), "--hub_model_id", "a/b", "--dry_run", str(run)], "not empty"),
], ids=["missing-folder", "checkpoint-not-run", "dry-run-into-full-folder"])
def test_bad_publish_input_is_one_line_exit_2(args, fragment, run_dir, tmp_path):
    before = tree(run_dir)
    proc = run_script("publish.py", *args(run_dir, tmp_path), env={"HF_TOKEN": SENTINEL})
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert tree(run_dir) == before
