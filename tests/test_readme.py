"""README.md's and docs/'s commands keep working: the test command is what CI runs, README's offline commands
run for real, commands that need the Hub fail offline with the kit's own one-line error (not a crash), and every
command in docs/ is marked as needing the Hub or a GPU. The documents also name every recipe key and every
shipped recipe, and speak of the project alone (no history)."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from lorakit.recipe import Recipe

README = (REPO / "README.md").read_text()
DOCS = {path.name: path.read_text() for path in sorted((REPO / "docs").glob("*.md"))}
HUB_MARK = "# needs the Hub"
MARKED = re.compile(r"#.*needs (the Hub|a GPU)$")


def _bash_lines(text: str = README) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("name", sorted(DOCS))
def test_docs_commands_are_marked(name):
    """docs/ pages hold reference commands that need a trained run, the Hub or a GPU; README's are the ones run."""
    text = DOCS[name]
    assert re.findall(r"```(\w*)\n", text)[::2] == ["bash"] * len(re.findall(r"```bash\n", text))
    unmarked = [line for line in _bash_lines(text) if not MARKED.search(line)]
    assert unmarked == []


def test_readme_lists_every_shipped_recipe():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        assert f"| `{path.name}` |" in README, path.name


def test_documents_speak_of_the_project_alone():
    """The word `word` matches appears in no Markdown file, nor in a comment or docstring of a Python file
    (identifiers such as pytest's fixture scope or onnxruntime's InferenceSession are code, not prose)."""
    import ast
    import io
    import tokenize

    word = re.compile(r"\bsessions?\b", re.I)
    files = subprocess.run(["git", "ls-files", "*.md", "*.py"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    found = []
    for name in files:
        text = (REPO / name).read_text()
        if name.endswith(".md"):
            found += [f"{name}: {line}" for line in text.splitlines() if word.search(line)]
            continue
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT and word.search(tok.string):
                found.append(f"{name}:{tok.start[0]}: {tok.string}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and word.search(doc):
                    found.append(f"{name}: docstring of {getattr(node, 'name', 'the module')}")
    assert found == []


def test_ci_runs_the_readme_test_command():
    test_commands = [line for line in _bash_lines() if "pytest" in line]
    assert len(test_commands) == 1
    assert test_commands[0] in (REPO / ".ci" / "run").read_text().splitlines()


def test_every_recipe_key_is_documented():
    documents = README + "".join(DOCS.values())
    for field in dataclasses.fields(Recipe):
        assert f"`{field.name}`" in documents, field.name


@pytest.mark.parametrize("line", [line for line in _bash_lines() if line.endswith(HUB_MARK)])
def test_hub_commands_fail_offline_with_one_clear_error(line):
    command = line[: -len(HUB_MARK)].split("&&")[-1].strip()  # the install steps are what CI itself runs
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    errors = [entry for entry in proc.stderr.splitlines() if entry.startswith("error:")]
    assert len(errors) == 1 and ("not found" in errors[0] or "could not" in errors[0]), proc.stderr[-2000:]


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout


def _copy_of_the_repo(tmp_path) -> Path:
    """The working tree's files (tracked and new, not ignored) in tmp_path/repo, with ../shared beside it as the
    real repo has it, so that README's commands run as written and write only there."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    copy = tmp_path / "repo"
    for name in files:
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    (tmp_path / "shared").symlink_to((REPO.parent / "shared").resolve())
    return copy


def test_offline_commands_run(tmp_path):
    """The offline blocks run as written, in order (they train MiniLM adapters on AG News and on a CSV, predict,
    score and export to ONNX), in a copy of the repo: the working tree is left as it was."""
    lines = [line for line in _bash_lines() if not line.endswith(HUB_MARK) and "pip install" not in line]
    assert any(line.startswith("python train.py") for line in lines)
    assert "export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1" in lines  # the quickstart says how to stay offline
    status = _git_status()
    copy = _copy_of_the_repo(tmp_path)
    script = "set -euo pipefail\n" + "\n".join(lines)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    proc = subprocess.run(["bash", "-c", script], cwd=copy, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = [line for line in proc.stdout.splitlines() if "\t" in line]  # infer.py: label<TAB>score<TAB>text
    assert len(predictions) == 4
    assert predictions[0].split("\t")[0] in {"World", "Sports", "Business", "Sci/Tech"}
    assert predictions[2].split("\t")[0] in {"negative", "positive"}  # the CSV's label names, taken from the data
    assert predictions[3].split("\t")[0] == predictions[2].split("\t")[0]  # ONNX agrees with torch
    assert "test_accuracy" in proc.stdout + proc.stderr  # score.py's summary
    assert (copy / "outputs" / "agnews-minilm" / "metrics.json").is_file()
    assert _git_status() == status  # nothing written into the working tree
