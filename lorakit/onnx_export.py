"""Export a trained classifier to ONNX, for lorakit.onnx (onnxruntime + tokenizers, no torch) or any ONNX runtime.

The adapter is merged exactly as lorakit.inference merges it (`Classifier` in fp32), then traced by torch's own
exporter (`torch.onnx.export(dynamo=True)`, through onnxscript) with dynamic batch and sequence axes. The
TorchScript exporter is not used: on transformers 5 it traces the attention mask into constants, and its graphs
disagree with torch by 1e-2. optimum-onnx is not used either: its 0.1.0 (the latest release) pins
transformers 4.x. Every export is checked before it is written: onnxruntime runs it on a batch of another
shape than the traced one, and its logits must equal torch's (within EXPORT_TOLERANCE); an architecture that does
not export, or exports wrong, is a one-line UsageError naming it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UsageError
from .inference import Classifier, check_export_dir, read_folder, resolve_adapter
from .predictions import softmax
from .runfolder import CARD_FILE, ONNX_FILE, TOKENIZER_JSON, LabelInfo, write_labels
from .textio import Row

QUANTIZE = ("int8",)
EXPORT_TOLERANCE = 1e-4  # largest |logit| difference between onnxruntime and torch that an fp32 export may show
MAX_BYTES = 2_000_000_000  # protobuf's 2 GB limit on one .onnx file (the kit writes no external weight files)
# Traced with two texts of different lengths (so the graph keeps a padding mask); checked with three others.
TRACE_TEXTS = ["a short text", "a somewhat longer text, to give the batch some padding"]
CHECK_TEXTS = ["one", "a text of middling length for the check", "the last check text is the longest of the three, "
               "by a few words at least"]


@dataclass
class OnnxExport:
    """What export_onnx wrote and measured: the folder, the graph's size, its agreement with torch on the check
    texts (largest probability difference), and with int8, the fp32 graph's size for comparison."""

    path: Path
    bytes: int
    max_prob_diff: float
    quantize: str | None = None
    fp32_bytes: int | None = None


class _Logits(torch.nn.Module):
    """The classifier as a function of its input tensors (in `names` order) to its logits: the graph's signature."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs))).logits


def _batch(classifier: Classifier, texts: list[str]) -> dict[str, torch.Tensor]:
    """`texts` encoded and padded exactly as Classifier.predict does (pairs: each text with its reverse)."""
    rows = [Row(t, t[::-1] if classifier.is_pair else None) for t in texts]
    enc, _ = classifier._encode(rows)
    return classifier._pad(enc, list(range(len(rows))))


def _tokenizer_json(classifier: Classifier, dest: Path) -> None:
    """The classifier's fast tokenizer as one tokenizer.json, with its padding token and the training cut set in
    it, so that the file alone says how to encode (for lorakit.onnx, and for runtimes in other languages)."""
    tokenizer = classifier.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UsageError(f"the tokenizer of {classifier.source!r} is not a fast (tokenizers) tokenizer, which an "
                         "ONNX export needs; use the merged export (export.py without --format onnx)")
    if tokenizer.pad_token_id is None:
        raise UsageError(f"the tokenizer of {classifier.source!r} has no padding token; set one (pad_token) in "
                         "its tokenizer_config.json, or use the merged export (export.py without --format onnx)")
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.enable_truncation(classifier.max_length, strategy="longest_first", direction=tokenizer.truncation_side)
    copy.enable_padding(direction="right", pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    copy.save(str(dest / TOKENIZER_JSON))


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's progress lines (printed) and its warnings about transformers internals, hidden; its errors
    still raise."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        level = logging.getLogger("torch.onnx").level
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.getLogger("torch.onnx").setLevel(level)


def _trace(classifier: Classifier, path: Path) -> None:
    model_type = classifier.model.config.model_type
    batch = _batch(classifier, TRACE_TEXTS)
    names = list(batch)
    axes = {0: "batch", 1: "sequence"}
    try:
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(_Logits(classifier.model, names), tuple(batch.values()), str(path), input_names=names,
                              output_names=["logits"], dynamic_shapes=(tuple(axes for _ in names),), dynamo=True,
                              external_data=False, verbose=False)
    except Exception as err:  # the exporter raises many types (torch.export, onnxscript); all mean the same here
        raise UsageError(f"the {model_type} architecture could not be exported to ONNX ({_reason(err)}); use the "
                         "merged export (export.py without --format onnx) for it") from None


def _reason(err: Exception) -> str:
    """The cause in one short line: the exporter's own summary line when it has one (its first line is a banner)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(err).splitlines()]
    lines = [line for line in lines if line]
    if "## Exception summary" in lines[:-1]:
        lines = lines[lines.index("## Exception summary") + 1:]
    return (lines[0] if lines else type(err).__name__)[:200]


def _run(path: Path, batch: dict[str, torch.Tensor]) -> np.ndarray:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    runtime = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {i.name: batch[i.name].numpy() for i in runtime.get_inputs()}
    return runtime.run(None, feed)[0]


def export_onnx(adapter: str | None, dest: Path, *, base_model: str | None = None, quantize: str | None = None,
                overwrite: bool = False) -> OnnxExport:
    """Write `adapter` to `dest` as an ONNX export: model.onnx (the merged classifier, dynamic batch and sequence
    axes; with quantize="int8", its weights quantised to int8 by onnxruntime's dynamic quantisation),
    tokenizer.json, labels.json and a README. Checked against torch before anything is written; written aside
    and renamed into place: all or nothing. Raises UsageError for a bad adapter or an architecture that does
    not export."""
    from .fileio import staged_folder

    if quantize not in (None, *QUANTIZE):
        raise UsageError(f"quantize should be one of {', '.join(QUANTIZE)} but the value passed is {quantize!r}")
    check_export_dir(dest, overwrite)
    folder = read_folder(resolve_adapter(adapter), base_model)
    classifier = Classifier.from_folder(folder, precision="fp32")
    size = sum(p.numel() * p.element_size() for p in classifier.model.parameters())
    if size > MAX_BYTES:
        raise UsageError(f"the model of {str(folder.path)!r} holds {size / 1e9:.1f} GB of weights, over the 2 GB "
                         "an .onnx file can hold; use the merged export (export.py without --format onnx)")
    check = _batch(classifier, CHECK_TEXTS)
    with torch.no_grad():
        expected = classifier.model(**check).logits.float().numpy()
    info = classifier.label_info
    model_type = classifier.model.config.model_type
    with staged_folder(dest, last=ONNX_FILE) as stage:
        fp32 = stage / "fp32.onnx.tmp"
        _trace(classifier, fp32)
        got = _run(fp32, check)
        error = float(np.abs(got - expected).max())
        if not error <= EXPORT_TOLERANCE:
            raise UsageError(f"the {model_type} architecture exports to an ONNX graph whose logits differ from "
                             f"torch's by {error:.2g}; use the merged export (export.py without --format onnx)")
        result = OnnxExport(dest, fp32.stat().st_size, float(np.abs(softmax(got) - softmax(expected)).max()))
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # Without onnxruntime's optional pre-processing, whose warning is silenced: the dynamo exporter has
            # optimised the graph already (pre-processing leaves it as it is), and the pre-processing's symbolic
            # shape inference fails on some BERT graphs.
            logging.disable(logging.WARNING)
            try:
                quantize_dynamic(str(fp32), str(stage / ONNX_FILE), weight_type=QuantType.QInt8)
            finally:
                logging.disable(logging.NOTSET)
            got = _run(stage / ONNX_FILE, check)
            result = OnnxExport(dest, (stage / ONNX_FILE).stat().st_size,
                                float(np.abs(softmax(got) - softmax(expected)).max()), quantize, result.bytes)
            fp32.unlink()
        else:
            fp32.rename(stage / ONNX_FILE)
        _tokenizer_json(classifier, stage)
        write_labels(stage, info)
        (stage / CARD_FILE).write_text(_readme(classifier, info, result, model_type), encoding="utf-8")
    return result


def _readme(classifier: Classifier, info: LabelInfo, result: OnnxExport, model_type: str) -> str:
    names = list(_batch(classifier, TRACE_TEXTS))
    weights = (f"int8 weights (onnxruntime dynamic quantisation; the fp32 graph is {result.fp32_bytes / 1e6:.1f} MB)"
               if result.quantize else "fp32 weights")
    pair = " --pair 'its second sentence'" if info.is_pair else ""
    return f"""# ONNX export of a LoRA classifier ({model_type})

LoRA merged into the weights; {weights}; {result.bytes / 1e6:.1f} MB. Labels: {', '.join(info.label_names)}
({info.problem_type}); text columns: {', '.join(info.text_columns)}; texts cut at {info.max_seq_length} tokens.

- `{ONNX_FILE}`: inputs {', '.join(names)} (int64, shape [batch, sequence], padded on the right), output `logits`
  [batch, {len(info.label_names)}].
- `{TOKENIZER_JSON}`: the tokenizer (`tokenizers.Tokenizer.from_file`), its padding token and the cut set in it.
- `labels.json`: label names in output order, problem type, text columns, maximum length.

Largest probability difference from the torch model on the export's check texts: {result.max_prob_diff:.2g}.

Run it without torch (onnxruntime, tokenizers and NumPy only):

    python infer.py --adapter path/to/this/folder "a text"{pair}
    from lorakit.onnx import OnnxClassifier; OnnxClassifier.load("path/to/this/folder").predict(["a text"])
"""
