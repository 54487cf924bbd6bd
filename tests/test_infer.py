"""infer.py and export.py end to end on adapters from tiny train.py runs: every input route, the stock loaders
(PEFT, pipeline) agreeing with it, Hub ids offline, a 100,000-line file, and bad input."""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import sys
from dataclasses import dataclass

import pytest
import torch
import yaml
from peft import AutoPeftModelForSequenceClassification, PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from conftest import GLUE, QUICK, REPO, run_script, tree
from lorakit import inference
from lorakit.errors import UsageError, run_cli

TEXTS = ["a gripping, beautifully acted film", "dull, slow and far too long", "it is fine, i guess",
         "the best film of the year", "not my cup of tea"]
PAIRS = [("The cat sat on the mat.", "A cat was sitting on the mat."),
         ("Shares rose 5 percent on Monday.", "The company reported a loss."),
         ("He said the plan would work.", "According to him, the plan was going to succeed.")]
# A larger learning rate than QUICK's moves the head away from its near-uniform start, so labels have a margin.
FAST = ["--learning_rate", "0.05", "--warmup_steps", "0"]


def _train(task: str, backbone, out) -> None:
    proc = run_script("train.py", "--task", task, "--model_name_or_path", str(backbone), "--dataset_name", str(GLUE),
                      *QUICK, *FAST, "--output_dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def sst2(tiny_roberta, tmp_path_factory):
    out = tmp_path_factory.mktemp("infer") / "sst2"
    _train("sst2", tiny_roberta, out)
    return out


@pytest.fixture(scope="module")
def mrpc(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("infer") / "mrpc"
    _train("mrpc", tiny_models["bert"], out)  # BERT: pairs need token_type_ids as well
    return out


def reference(folder, texts, pairs=None) -> torch.Tensor:
    """Class probabilities computed directly: PEFT's own (unmerged) model on the adapter, one text at a time."""
    labels = json.loads((folder / "labels.json").read_text())["label_names"]
    model = AutoPeftModelForSequenceClassification.from_pretrained(str(folder), num_labels=len(labels)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    out = []
    with torch.no_grad():
        for i, text in enumerate(texts):
            enc = tokenizer(text, pairs[i] if pairs else None, truncation=True, max_length=64, return_tensors="pt")
            out.append(model(**enc).logits.softmax(-1)[0])
    return torch.stack(out)


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def infer(capsys, monkeypatch):
    """infer.py's main in this process, through the same run_cli wrapper as the script (a subprocess costs seconds
    of imports; the tests that need a real process, for the environment or the exit, use run_script)."""
    import infer as script

    def run(*args, stdin=None) -> Done:
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((stdin or "").encode())))
        if stdin is None:
            monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
        code = run_cli(script.main, list(args))
        out, err = capsys.readouterr()
        return Done(code, out, err)

    return run


def records(proc) -> list[dict]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def assert_matches(recs, probs, labels, atol=1e-5):
    assert len(recs) == len(probs)
    for rec, p in zip(recs, probs.tolist()):
        assert rec["label"] == labels[max(range(len(p)), key=p.__getitem__)]
        assert list(rec["scores"]) == labels
        assert rec["scores"] == pytest.approx(dict(zip(labels, p)), abs=atol)
        assert rec["score"] == pytest.approx(max(p), abs=atol)


def test_texts_files_and_stdin_match_the_models_own_probabilities(sst2, tmp_path, infer):
    labels = ["negative", "positive"]
    probs = reference(sst2, TEXTS)
    # The check can fail: the texts' probabilities differ by far more than the tolerance.
    assert (probs[:, 1].max() - probs[:, 1].min()).item() > 1e-4

    one = run_script("infer.py", "--adapter", str(sst2), "--precision", "fp32", TEXTS[0])  # the real script
    assert one.returncode == 0, one.stderr
    label, score, text = one.stdout.rstrip("\n").split("\t")
    assert (text, label) == (TEXTS[0], labels[int(probs[0].argmax())])
    assert float(score) == pytest.approx(probs[0].max().item(), abs=1e-4)

    several = records(infer("--adapter", str(sst2), "--precision", "fp32", "--json", *TEXTS))
    assert_matches(several, probs, labels)
    assert [r["text"] for r in several] == TEXTS and all("line" not in r for r in several)

    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    from_file = records(infer("--adapter", str(sst2), "--precision", "fp32", "--json",
                              "--file", str(tmp_path / "texts.txt")))
    assert_matches(from_file, probs, labels)
    assert [r["line"] for r in from_file] == [1, 2, 3, 4, 5]

    from_stdin = records(infer("--adapter", str(sst2), "--precision", "fp32", "--json", stdin="\n".join(TEXTS) + "\n"))
    assert [r["scores"] for r in from_stdin] == [r["scores"] for r in from_file]

    rows = [{"id": i, "review": t} for i, t in enumerate(TEXTS)]
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "texts.csv").write_text("id,review\n" + "".join(f'{r["id"]},"{r["review"]}"\n' for r in rows),
                                        encoding="utf-8")
    for name in ("texts.jsonl", "texts.csv"):
        recs = records(infer("--adapter", str(sst2), "--precision", "fp32", "--json", "--file", str(tmp_path / name),
                             "--column", "review"))
        assert_matches(recs, probs, labels)
        assert [r["text"] for r in recs] == TEXTS


def test_top_k_and_plain_output(sst2, infer):
    proc = infer("--adapter", str(sst2), "--top_k", "5", *TEXTS[:2])
    assert proc.returncode == 0, proc.stderr
    for line, text in zip(proc.stdout.splitlines(), TEXTS[:2]):
        fields = line.split("\t")
        assert fields[-1] == text and {fields[0], fields[2]} == {"negative", "positive"}  # k capped at 2 labels
        assert float(fields[1]) >= float(fields[3])
    rec = records(infer("--adapter", str(sst2), "--top_k", "1", "--json", TEXTS[0]))[0]
    assert rec["top_k"] == [{"label": rec["label"], "score": rec["score"]}]


def test_sentence_pairs_from_arguments_and_a_tab_separated_file(mrpc, tmp_path, infer):
    labels = ["not_equivalent", "equivalent"]
    firsts, seconds = zip(*PAIRS)
    probs = reference(mrpc, firsts, seconds)
    # The pairs' probabilities must differ by more than the tolerance, or a pair read as another would pass. A
    # tiny model trained for a few steps barely moves them, so the tolerance is tight: fp32 on both sides.
    atol = 1e-6
    assert (probs[:, 1].max() - probs[:, 1].min()).item() > 10 * atol
    args = [x for a, b in PAIRS for x in (a, "--pair", b)]
    recs = records(infer("--adapter", str(mrpc), "--precision", "fp32", "--json", *args))
    assert_matches(recs, probs, labels, atol)
    assert [(r["text"], r["text_pair"]) for r in recs] == PAIRS

    (tmp_path / "pairs.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in PAIRS), encoding="utf-8")
    assert_matches(records(infer("--adapter", str(mrpc), "--precision", "fp32", "--json",
                                 "--file", str(tmp_path / "pairs.tsv"))), probs, labels, atol)
    # A CSV named by the adapter's own columns needs no --column.
    (tmp_path / "pairs.csv").write_text("sentence1,sentence2\n" + "".join(f'"{a}","{b}"\n' for a, b in PAIRS))
    assert_matches(records(infer("--adapter", str(mrpc), "--precision", "fp32", "--json",
                                 "--file", str(tmp_path / "pairs.csv"))), probs, labels, atol)


def test_python_api_merged_equals_peft_and_bf16_stays_close(sst2):
    merged = inference.Classifier.load(str(sst2), precision="fp32")
    unmerged = inference.Classifier.load(str(sst2), precision="fp32", merge=False)
    assert isinstance(unmerged.model, PeftModel) and not isinstance(merged.model, PeftModel)
    a, b = merged.predict(TEXTS), unmerged.predict(TEXTS)
    assert [p.label for p in a] == [p.label for p in b]
    for x, y in zip(a, b):
        assert x.scores == pytest.approx(y.scores, abs=1e-6)

    # The merge maths: every weight equals PEFT's own merge_and_unload.
    peft_merged = unmerged.model.merge_and_unload().state_dict()
    ours = merged.model.state_dict()
    assert ours.keys() == peft_merged.keys()
    changed = [k for k in ours if "query.weight" in k or "value.weight" in k]
    assert changed and all(torch.allclose(ours[k], peft_merged[k], atol=1e-6) for k in ours)

    bf16 = inference.Classifier.load(str(sst2), precision="bf16")
    assert bf16.dtype == torch.bfloat16
    for x, y in zip(a, bf16.predict(TEXTS)):
        assert y.scores == pytest.approx(x.scores, abs=2e-2)
        if abs(x.scores["positive"] - x.scores["negative"]) > 0.05:
            assert y.label == x.label


def test_other_adapters_and_the_scratch_layer_load_through_peft(sst2, tmp_path, monkeypatch):
    from lorakit import adapters

    expected = inference.Classifier.load(str(sst2), precision="fp32").predict(TEXTS)
    foreign = _copy(sst2, tmp_path, "foreign")
    (foreign / "recipe.yaml").unlink()  # not the kit's own: PEFT merges it, our merge is not called
    scratch = _copy(sst2, tmp_path, "scratch")
    recipe = yaml.safe_load((scratch / "recipe.yaml").read_text())
    (scratch / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "lora_impl": "scratch"}))

    def not_called(*args, **kwargs):
        raise AssertionError("merge_lora used for an adapter that is not the kit's own")

    monkeypatch.setattr(inference, "merge_lora", not_called)
    via_peft = inference.Classifier.load(str(foreign), precision="fp32")
    assert not isinstance(via_peft.model, PeftModel)  # merged and unloaded
    unmerged_scratch = inference.Classifier.load(str(scratch), precision="fp32", merge=False)
    assert any(isinstance(m, adapters.LoraLinear) for m in unmerged_scratch.model.modules())
    for clf in (via_peft, unmerged_scratch):
        for x, y in zip(expected, clf.predict(TEXTS)):
            assert (y.label, y.scores) == (x.label, pytest.approx(x.scores, abs=1e-6))


def test_stock_loaders_without_our_code_agree(sst2, tmp_path, infer, capsys):
    probs = reference(sst2, TEXTS)
    ours = inference.Classifier.load(str(sst2), precision="fp32").predict(TEXTS)

    # pipeline on the adapter folder: same classes, named LABEL_k (the base config has no label names).
    on_adapter = pipeline("text-classification", model=str(sst2))(TEXTS)
    assert [r["label"] for r in on_adapter] == [f"LABEL_{int(p.argmax())}" for p in probs]
    assert [r["score"] for r in on_adapter] == pytest.approx([p.score for p in ours], abs=1e-5)

    # The merged export: transformers alone, the label names themselves.
    import export

    dest = tmp_path / "merged"
    assert run_cli(export.main, ["--adapter", str(sst2), "--output_dir", str(dest)]) == 0
    assert {p.name for p in dest.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json",
                                                "tokenizer_config.json", "labels.json"}
    config = json.loads((dest / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"} and "auto_map" not in config
    on_export = pipeline("text-classification", model=str(dest))(TEXTS)
    assert [r["label"] for r in on_export] == [p.label for p in ours]
    assert [r["score"] for r in on_export] == pytest.approx([p.score for p in ours], abs=1e-5)
    model = AutoModelForSequenceClassification.from_pretrained(str(dest)).eval()
    assert not any("lora" in name for name, _ in model.named_parameters())
    # infer.py takes the export too, and says the same.
    recs = records(infer("--adapter", str(dest), "--precision", "fp32", "--json", *TEXTS))
    assert_matches(recs, probs, ["negative", "positive"])
    # A second export into the same folder is refused, the folder untouched.
    before = tree(dest)
    capsys.readouterr()
    assert run_cli(export.main, ["--adapter", str(sst2), "--output_dir", str(dest)]) == 2
    assert "not empty" in capsys.readouterr().err and tree(dest) == before


def _hub_cache(root, repo_id: str, folder) -> None:
    """Put `folder` into `root` as huggingface_hub caches a downloaded model repo at one commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit,
                    ignore=shutil.ignore_patterns("checkpoint-*", "README.md", "*.png", "log_history.json"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_hub_repo_id_loads_offline_from_the_cache(sst2, tmp_path):
    cache = tmp_path / "hub"
    _hub_cache(cache, "someone/tiny-sst2", sst2)
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    via_hub = records(run_script("infer.py", "--adapter", "someone/tiny-sst2", "--json", "--precision", "fp32",
                                 *TEXTS, env=env))
    assert_matches(via_hub, reference(sst2, TEXTS), ["negative", "positive"])
    unknown = run_script("infer.py", "--adapter", "someone/not-cached", "x", env=env)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert unknown.stderr.startswith("error: adapter 'someone/not-cached'") and "HF_HUB_OFFLINE" in unknown.stderr


def test_no_adapter_uses_the_latest_run_under_outputs(sst2, tmp_path, infer, monkeypatch):
    shutil.copytree(sst2, tmp_path / "outputs" / "old")
    shutil.copytree(sst2, tmp_path / "outputs" / "sst2")
    os.utime(tmp_path / "outputs" / "old" / "metrics.json", (0, 0))
    monkeypatch.chdir(tmp_path)
    proc = infer("--json", TEXTS[0])
    assert "outputs/sst2" in proc.stderr
    assert records(proc)[0]["label"] in ("negative", "positive")
    monkeypatch.chdir(tmp_path / "outputs")
    empty = infer(TEXTS[0])
    assert empty.returncode == 2 and "--adapter" in empty.stderr


def test_long_texts_are_truncated_with_a_count(sst2, infer):
    long = " ".join(["wonderful"] * 400)
    proc = infer("--adapter", str(sst2), long, TEXTS[0])
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 2
    assert "1 of 2 texts were longer than 64 tokens" in proc.stderr


def test_hundred_thousand_lines_stream_in_bounded_memory(sst2, tmp_path, infer):
    rng = random.Random(0)
    words = "good bad film plot actor slow funny great dull moving long short story".split()
    bad_lines = {7, 50_001, 99_999}
    path = tmp_path / "big.txt"
    with path.open("wb") as fh:
        for n in range(1, 100_001):
            if n == 7:
                fh.write(b"caf\xe9 latin-1\n")  # not UTF-8
            elif n in bad_lines:
                fh.write(b"   \n")  # empty
            else:
                fh.write((" ".join(rng.choices(words, k=rng.randint(2, 12))) + "\n").encode())
    # The child's peak RSS, measured by a wrapper whose only child it is.
    wrapper = ("import resource, subprocess, sys\n"
               "with open(sys.argv[1], 'w') as out:\n"
               "    p = subprocess.run(sys.argv[2:], stdout=out, stderr=subprocess.PIPE, text=True)\n"
               "sys.stderr.write(p.stderr)\n"
               "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    out = tmp_path / "out.jsonl"
    proc = run_script("-c", wrapper, str(out), sys.executable, str(REPO / "infer.py"), "--adapter", str(sst2),
                      "--json", "--file", str(path), "--skip_bad_lines", timeout=900,
                      # The tiny model's matmuls gain nothing from a second thread; on a busy 2-core machine the
                      # threads only wait for each other (6x slower measured).
                      env={"OMP_NUM_THREADS": "1"})
    rc, maxrss_kb = map(int, proc.stdout.split())
    assert rc == 0, proc.stderr[-2000:]
    lines = out.read_text().splitlines()
    predicted = {json.loads(line)["line"] for line in lines}
    reported = {int(n) for n in re.findall(r"line (\d+) (?:is not UTF-8|is empty)", proc.stderr)}
    assert reported == bad_lines
    assert predicted | reported == set(range(1, 100_001)) and not predicted & reported
    assert "classifying" in proc.stderr  # the progress bar
    # About 450 MB measured, as for a 1,000-line file: torch and transformers, not the input.
    assert maxrss_kb < 1_000_000, f"peak RSS {maxrss_kb / 1024:.0f} MB"

    # Without --skip_bad_lines the first bad line stops it before any model is loaded, with its number.
    fatal = infer("--adapter", str(sst2), "--file", str(path))
    assert fatal.returncode == 2 and "line 7 is not UTF-8" in fatal.stderr and fatal.stdout == ""


def _copy(src, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoint-*"))
    return dst


def _missing_folder(sst2, tmp_path, models):
    return ["--adapter", str(tmp_path / "nowhere"), "x"], "adapter folder"


def _unknown_repo_offline(sst2, tmp_path, models):
    return ["--adapter", "someone/unknown-repo", "x"], "someone/unknown-repo"


def _missing_tokenizer(sst2, tmp_path, models):
    folder = _copy(sst2, tmp_path, "no-tokenizer")
    (folder / "tokenizer_config.json").unlink()
    return ["--adapter", str(folder), "x"], "missing tokenizer_config.json"


def _corrupt_weights(sst2, tmp_path, models):
    folder = _copy(sst2, tmp_path, "corrupt")
    data = (folder / "adapter_model.safetensors").read_bytes()
    (folder / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    return ["--adapter", str(folder), "x"], "adapter_model.safetensors' is corrupt"


def _label_count(sst2, tmp_path, models):
    folder = _copy(sst2, tmp_path, "labels")
    labels = json.loads((folder / "labels.json").read_text())
    labels["label_names"] = ["a", "b", "c"]
    (folder / "labels.json").write_text(json.dumps(labels))
    return ["--adapter", str(folder), "x"], "classifier for 2 labels but its labels.json names 3"


def _other_base_type(sst2, tmp_path, models):
    return ["--adapter", str(sst2), "--base_model", str(models["bert"]), "x"], "does not fit base model"


def _other_base_size(sst2, tmp_path, models):
    from transformers import AutoConfig, AutoModel

    folder = tmp_path / "roberta-48"
    AutoModel.from_config(AutoConfig.from_pretrained(models["roberta"], hidden_size=48)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(models["roberta"]).save_pretrained(folder)
    return ["--adapter", str(sst2), "--base_model", str(folder), "x"], "does not fit base model"


def _empty_text(sst2, tmp_path, models):
    return ["--adapter", str(sst2), ""], "text 1 is empty"


def _empty_file(sst2, tmp_path, models):
    (tmp_path / "empty.txt").write_text("")
    return ["--adapter", str(sst2), "--file", str(tmp_path / "empty.txt")], "holds no text"


def _not_utf8(sst2, tmp_path, models):
    (tmp_path / "latin1.txt").write_bytes("un film très réussi\n".encode("latin-1"))
    return ["--adapter", str(sst2), "--file", str(tmp_path / "latin1.txt")], "line 1 is not UTF-8"


def _absent_file(sst2, tmp_path, models):
    return ["--adapter", str(sst2), "--file", str(tmp_path / "absent.txt")], "absent.txt' not found"


def _bad_top_k(sst2, tmp_path, models):
    return ["--adapter", str(sst2), "--top_k", "0", "x"], "--top_k"


@pytest.mark.parametrize("case", [_missing_folder, _unknown_repo_offline, _missing_tokenizer, _corrupt_weights,
                                  _label_count, _other_base_type, _other_base_size, _empty_text, _empty_file,
                                  _not_utf8, _absent_file, _bad_top_k], ids=lambda f: f.__name__.strip("_"))
def test_bad_input_is_one_line_exit_2(case, sst2, tmp_path, tiny_models, infer):
    args, fragment = case(sst2, tmp_path, tiny_models)
    before = tree(sst2)
    proc = infer(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert tree(sst2) == before


def test_empty_stdin_and_wrong_arity(sst2, mrpc, infer):
    proc = infer("--adapter", str(sst2), stdin="")
    assert proc.returncode == 2 and "standard input holds no text" in proc.stderr
    proc = infer("--adapter", str(sst2), "a", "--pair", "b")
    assert proc.returncode == 2 and "classifies single texts" in proc.stderr
    proc = infer("--adapter", str(mrpc), "just one sentence")
    assert proc.returncode == 2 and "--pair" in proc.stderr


def test_export_of_a_bad_adapter_writes_nothing(sst2, tmp_path):
    dest = tmp_path / "export"
    proc = run_script("export.py", "--adapter", str(sst2), "--base_model", str(tmp_path / "nowhere"),
                      "--output_dir", str(dest))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert tree(dest) == {}


def test_api_errors_are_usage_errors(sst2):
    clf = inference.Classifier.load(str(sst2))
    with pytest.raises(UsageError, match="text 2 is empty"):
        clf.predict(["fine", " "])
    with pytest.raises(UsageError, match="one --pair per text"):
        clf.predict(["a", "b"], pairs=["c"])
    assert clf.predict("one text")[0].label in clf.label_names


def test_inference_benchmark_runs_on_a_tiny_adapter(sst2):
    from bench.inference import main

    result = main(["--tiny", "--adapter", str(sst2)])
    assert set(result["throughput"]["rates"]) >= {"pipeline, defaults", "pipeline, batch_size=64"}
    assert all(rate > 0 for rate in result["throughput"]["rates"].values())
    assert result["throughput"]["agree_fp32"] == 1.0  # the same merged weights, whoever runs them
    assert set(result["latency"][64]) == {"base", "merged", "unmerged"}
    assert list(result["cold_start"]) == ["python", "+ import torch", "+ transformers, lorakit",
                                          "infer.py, one headline", "transformers alone, bare base, one headline",
                                          "peft too"]
