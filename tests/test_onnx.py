"""ONNX: export.py --format onnx on adapters from tiny train.py runs, the export run by lorakit.onnx (onnxruntime,
no torch) against the torch path on the same inputs, int8, a cold infer.py process, pairs, and bad input."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from conftest import GLUE, QUICK, run_script, tree
from lorakit.errors import UsageError, run_cli
from lorakit.inference import Classifier
from lorakit.onnx import OnnxClassifier
from lorakit.onnx_export import export_onnx

# Lengths from one token to past the recipe's 64 (QUICK): batches of 2 mix lengths, and the last text is cut.
TEXTS = ["fun", "a gripping, beautifully acted film", "dull, slow and far too long", "it is fine, i guess",
         "the best film of the year, and the most moving one i have seen in a long while", "not my cup of tea",
         " ".join(["an endless, joyless slog of a film"] * 12)]
PAIRS = [("The cat sat on the mat.", "A cat was sitting on the mat."),
         ("Shares rose 5 percent on Monday.", "The company reported a loss."),
         ("He said the plan would work.", "According to him, the plan was going to succeed."),
         ("Short.", " ".join(["a very long second sentence that goes on"] * 10))]
EXPORT_FILES = {"model.onnx", "tokenizer.json", "labels.json", "README.md"}


def _train(task: str, backbone, out) -> None:
    """A train.py run, its adapter's matrices then replaced by seeded random ones (biases by zeros). A tiny model
    trained a few steps gives every text nearly the same probabilities (within 1e-3), which would make a 1e-4
    agreement say little; with these weights the texts' probabilities lie far apart, so an export error shows."""
    import torch
    from safetensors.torch import load_file, save_file

    proc = run_script("train.py", "--task", task, "--model_name_or_path", str(backbone), "--dataset_name", str(GLUE),
                      *QUICK, "--output_dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    generator = torch.Generator().manual_seed(1)
    tensors = load_file(out / "adapter_model.safetensors")
    save_file({k: torch.randn(v.shape, generator=generator) if v.ndim == 2 else torch.zeros(v.shape)
               for k, v in tensors.items()}, out / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def sst2(tiny_roberta, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "sst2"
    _train("sst2", tiny_roberta, out)
    return out


@pytest.fixture(scope="module")
def exported(sst2, tmp_path_factory):
    """The SST-2 adapter exported once in fp32, shared by the tests of this module."""
    return export_onnx(str(sst2), tmp_path_factory.mktemp("onnx") / "sst2-onnx")


@pytest.fixture(scope="module")
def torch_fp32(sst2):
    return Classifier.load(str(sst2), precision="fp32", batch_size=2)


def _agree(onnx_preds, torch_preds, atol):
    assert [p.label for p in onnx_preds] == [p.label for p in torch_preds]
    for a, b in zip(onnx_preds, torch_preds):
        assert list(a.scores) == list(b.scores)
        assert np.allclose(list(a.scores.values()), list(b.scores.values()), atol=atol, rtol=0)
        assert (a.text, a.text_pair, a.truncated) == (b.text, b.text_pair, b.truncated)


def test_fp32_export_agrees_with_the_torch_path(sst2, exported, torch_fp32):
    import onnx

    assert {p.name for p in exported.path.iterdir()} == EXPORT_FILES
    labels = json.loads((exported.path / "labels.json").read_text())
    assert labels == {**json.loads((sst2 / "labels.json").read_text()), "max_seq_length": 64}
    graph = onnx.load(str(exported.path / "model.onnx")).graph
    assert [(i.name, [d.dim_param for d in i.type.tensor_type.shape.dim]) for i in graph.input] == \
        [("input_ids", ["batch", "sequence"]), ("attention_mask", ["batch", "sequence"])]

    clf = OnnxClassifier.load(exported.path, batch_size=2)  # batches of 2: per-batch padding of mixed lengths
    ours, reference = clf.predict(TEXTS), torch_fp32.predict(TEXTS)
    positive = [p.scores["positive"] for p in reference]
    assert max(positive) - min(positive) > 0.1 and len({p.label for p in reference}) == 2  # the check can fail
    _agree(ours, reference, atol=1e-4)
    assert [p.truncated for p in ours] == [False] * 6 + [True]
    assert clf.truncated == 1 and clf.max_length == 64
    # One text alone (no padding) gives the probabilities it gets inside a padded batch.
    assert clf.predict(TEXTS[1])[0].scores == pytest.approx(ours[1].scores, abs=1e-5)


def test_int8_export_keeps_the_labels(sst2, exported, tmp_path):
    int8 = export_onnx(str(sst2), tmp_path / "int8", quantize="int8")
    assert {p.name for p in int8.path.iterdir()} == EXPORT_FILES
    # The matmul weights are stored in int8; the embeddings (most of this tiny model) stay fp32.
    assert int8.quantize == "int8" and int8.fp32_bytes == exported.bytes and int8.bytes < 0.8 * exported.bytes
    fp32 = OnnxClassifier.load(exported.path).predict(TEXTS)
    ours = OnnxClassifier.load(int8.path).predict(TEXTS)
    # int8 rounds the weights (and, dynamically, each matmul's input): on this model's random weights of scale 1
    # that moves a probability by up to 0.08 (0.57 -> 0.50 for one text), so labels are asserted equal where fp32
    # is more than 0.1 from the boundary: 5 of the 7 texts here.
    shift = [abs(a.scores["positive"] - b.scores["positive"]) for a, b in zip(ours, fp32)]
    assert 0 < max(shift) < 0.1 and int8.max_prob_diff < 0.1
    clear = [i for i, p in enumerate(fp32) if abs(p.scores["positive"] - 0.5) > 0.1]
    assert len(clear) >= 5 and [ours[i].label for i in clear] == [fp32[i].label for i in clear]


def test_a_cold_infer_process_on_an_export_imports_neither_torch_nor_transformers(exported, torch_fp32):
    # infer.py run as a script, then the modules it imported: the process's own record, not a guess.
    code = ("import runpy, sys\nsys.argv = ['infer.py', *sys.argv[1:]]\ntry:\n"
            "    runpy.run_path('infer.py', run_name='__main__')\nexcept SystemExit as done:\n"
            "    heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'peft'})\n"
            "    print('imported:', *heavy, file=sys.stderr)\n    raise")
    proc = run_script("-c", code, "--adapter", str(exported.path), TEXTS[1], TEXTS[2])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "imported:"
    reference = torch_fp32.predict(TEXTS[1:3])
    lines = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [(label, text) for label, _, text in lines] == [(p.label, p.text) for p in reference]
    assert [float(score) for _, score, _ in lines] == pytest.approx([p.score for p in reference], abs=1e-4)


@pytest.fixture
def infer(capsys, monkeypatch):
    """infer.py's main in this process, through run_cli as the script runs it: (exit code, stdout, stderr)."""
    import io

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


def test_infer_prints_what_the_torch_path_prints(sst2, exported, infer, tmp_path):
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    for args, stdin in ((["--json", "--top_k", "2", *TEXTS], None), (["--json", "--file", str(tmp_path / "texts.txt")],
                                                                     None), (["--json"], "\n".join(TEXTS) + "\n")):
        code, out, err = infer("--adapter", str(exported.path), "--batch_size", "3", *args, stdin=stdin)
        assert code == 0, err
        reference = infer("--adapter", str(sst2), "--precision", "fp32", "--batch_size", "3", *args, stdin=stdin)
        assert reference[0] == 0 and err == reference[2] and "1 of 7 texts" in err  # the truncation warning
        ours, theirs = [json.loads(line) for line in out.splitlines()], \
            [json.loads(line) for line in reference[1].splitlines()]
        assert [{k: v for k, v in r.items() if "score" not in k and k != "top_k"} for r in ours] == \
            [{k: v for k, v in r.items() if "score" not in k and k != "top_k"} for r in theirs]
        for a, b in zip(ours, theirs):
            assert a["scores"] == pytest.approx(b["scores"], abs=1e-4)
            if "top_k" in b:
                assert [t["label"] for t in a["top_k"]] == [t["label"] for t in b["top_k"]]
    code, out, _ = infer("--adapter", str(exported.path), "--top_k", "2", TEXTS[1])
    label, score, other, rest, text = out.rstrip("\n").split("\t")
    assert code == 0 and text == TEXTS[1] and {label, other} == {"negative", "positive"}
    assert float(score) >= float(rest)


def test_pair_adapter_exports_and_predicts_pairs(tiny_models, tmp_path, infer):
    adapter = tmp_path / "mrpc"
    _train("mrpc", tiny_models["bert"], adapter)  # BERT: pairs need token_type_ids as well
    export = export_onnx(str(adapter), tmp_path / "mrpc-onnx")
    texts, pairs = [a for a, _ in PAIRS], [b for _, b in PAIRS]
    ours = OnnxClassifier.load(export.path, batch_size=2).predict(texts, pairs)
    reference = Classifier.load(str(adapter), precision="fp32", batch_size=2).predict(texts, pairs)
    _agree(ours, reference, atol=1e-4)
    assert [p.truncated for p in ours] == [False, False, False, True]
    assert [i.name for i in OnnxClassifier.load(export.path).runtime.get_inputs()] == \
        ["input_ids", "token_type_ids", "attention_mask"]
    code, out, err = infer("--adapter", str(export.path), "--json", PAIRS[0][0], "--pair", PAIRS[0][1])
    assert code == 0, err
    record = json.loads(out)
    assert (record["text"], record["text_pair"], record["label"]) == (*PAIRS[0], reference[0].label)
    code, _, err = infer("--adapter", str(export.path), "just one sentence")
    assert code == 2 and "--pair" in err


def test_deberta_v2_exports(tiny_models, tmp_path):
    """The third architecture the kit trains, as a whole model folder (no training needed to check the export)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lorakit.runfolder import LabelInfo, write_labels

    folder = tmp_path / "deberta"
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_models["deberta-v2"], num_labels=3)
    with torch.no_grad():  # weights far wider than the initialiser's 0.02, so that texts get different probabilities
        for name, param in model.named_parameters():
            if param.ndim == 2:
                param.normal_(0, 0.3)
            elif name.startswith(("pooler", "classifier")):
                param.zero_()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_models["deberta-v2"]).save_pretrained(folder)
    write_labels(folder, LabelInfo(["a", "b", "c"], ["text"], max_seq_length=32))
    export = export_onnx(str(folder), tmp_path / "deberta-onnx")
    ours = OnnxClassifier.load(export.path, batch_size=3).predict(TEXTS)
    _agree(ours, Classifier.load(str(folder), precision="fp32", batch_size=3).predict(TEXTS), atol=1e-4)
    assert max(p.score for p in ours) - min(p.score for p in ours) > 0.1


def _export_cli(*args) -> tuple[int, str]:
    import contextlib
    import io

    import export as script

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = run_cli(script.main, list(args))
    return code, err.getvalue()


def test_an_incomplete_adapter_or_a_failing_architecture_is_refused_in_one_line(sst2, tmp_path, monkeypatch):
    incomplete = tmp_path / "incomplete"
    shutil.copytree(sst2, incomplete)
    (incomplete / "adapter_model.safetensors").unlink()
    dest = tmp_path / "out"
    code, err = _export_cli("--adapter", str(incomplete), "--format", "onnx", "--output_dir", str(dest))
    assert code == 2 and err.count("\n") == 1 and "missing adapter_model.safetensors" in err, err
    assert tree(dest) == {}

    code, err = _export_cli("--adapter", str(sst2), "--quantize", "int8", "--output_dir", str(dest))
    assert code == 2 and "--format onnx" in err and tree(dest) == {}

    import torch

    def refuse(*args, **kwargs):
        raise RuntimeError("Failed to export\n## Exception summary\nan op the exporter does not know\nmore")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    code, err = _export_cli("--adapter", str(sst2), "--format", "onnx", "--output_dir", str(dest))
    assert code == 2 and err.count("\n") == 1, err
    assert "the roberta architecture could not be exported to ONNX (an op the exporter does not know)" in err
    assert tree(dest) == {}


def test_a_damaged_export_or_a_torch_flag_is_refused_in_one_line(exported, tmp_path, infer):
    broken = tmp_path / "broken"
    shutil.copytree(exported.path, broken)
    (broken / "tokenizer.json").unlink()
    code, _, err = infer("--adapter", str(broken), "hello")
    assert code == 2 and err.count("\n") == 1 and "missing tokenizer.json" in err
    code, _, err = infer("--adapter", str(exported.path), "--precision", "bf16", "hello")
    assert code == 2 and "--precision does not apply to the ONNX export" in err
    with pytest.raises(UsageError, match="text 2 is empty"):
        OnnxClassifier.load(exported.path).predict(["fine", " "])
    labels = json.loads((exported.path / "labels.json").read_text())
    shutil.copy(exported.path / "model.onnx", broken / "model.onnx")
    shutil.copy(exported.path / "tokenizer.json", broken / "tokenizer.json")
    (broken / "labels.json").write_text(json.dumps({**labels, "label_names": ["score"], "problem_type": "regression"}))
    with pytest.raises(UsageError, match="gives 2 outputs but its labels.json names 1"):
        OnnxClassifier.load(broken)


def test_multi_label_outputs_come_from_the_shared_predictions(sst2, exported, tmp_path):
    # labels.json decides how outputs are read, for both paths alike: here as two independent labels (sigmoid).
    onnx_folder, adapter = tmp_path / "onnx", tmp_path / "adapter"
    shutil.copytree(exported.path, onnx_folder)
    shutil.copytree(sst2, adapter)
    for folder in (onnx_folder, adapter):
        labels = json.loads((folder / "labels.json").read_text())
        (folder / "labels.json").write_text(json.dumps({**labels, "problem_type": "multi_label_classification"}))
    ours, theirs = OnnxClassifier.load(onnx_folder), Classifier.load(str(adapter), precision="fp32")
    # A threshold in the widest gap between this model's own sigmoid scores (as --threshold sets it): some labels
    # pass, some not, and none sits within the paths' 1e-4 of it.
    scores = sorted(v for p in ours.predict(TEXTS) for v in p.scores.values())
    low, high = max(zip(scores, scores[1:]), key=lambda pair: pair[1] - pair[0])
    assert high - low > 1e-3
    ours.threshold = theirs.threshold = (low + high) / 2
    mine, reference = ours.predict(TEXTS), theirs.predict(TEXTS)
    passed = [[name for name, _ in p.labels] for p in mine]
    assert 0 < sum(map(len, passed)) < 2 * len(TEXTS)
    assert passed == [[name for name, _ in p.labels] for p in reference]
    for a, b in zip(mine, reference):
        assert a.scores == pytest.approx(b.scores, abs=1e-4)
