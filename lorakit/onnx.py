"""Inference without torch: an ONNX export (export.py --format onnx) run by onnxruntime, tokenised by `tokenizers`.

    clf = OnnxClassifier.load("exports/sst2-onnx")
    clf.predict(["a gripping film", "dull"])     # [Prediction(label='positive', score=0.97, ...), ...]

This module imports onnxruntime, tokenizers and NumPy, never torch or transformers: a process that predicts from
an export starts in a fraction of a second and needs neither installed. It batches as lorakit.inference.Classifier
does (texts sorted by length, padded per batch to the batch's longest row, the same truncation count), and its
predictions come from lorakit.predictions, so both paths print the same formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

from .errors import UsageError
from .predictions import Predicting, Prediction, from_logits
from .runfolder import ONNX_FILE, ONNX_FILES, TOKENIZER_JSON, LabelInfo, is_onnx_export, read_labels
from .textio import Row, check_rows

# Which field of a tokenizers Encoding fills each input the graph may take.
FEEDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


@dataclass
class OnnxFolder:
    """An ONNX export checked and read: its path and labels.json (what infer.py needs before loading the model)."""

    path: Path
    labels: LabelInfo

    @property
    def is_pair(self) -> bool:
        return self.labels.is_pair

    @property
    def text_columns(self) -> list[str]:
        return self.labels.text_columns


def read_export(path: Path) -> OnnxFolder:
    """Check that `path` holds a complete ONNX export and read its labels.json. Raises UsageError naming any
    missing file."""
    if not is_onnx_export(path):
        raise UsageError(f"{str(path)!r} holds no {ONNX_FILE}; pass a folder written by export.py --format onnx")
    missing = [name for name in ONNX_FILES if not (path / name).is_file()]
    if missing:
        raise UsageError(f"ONNX export {str(path)!r} is missing {', '.join(missing)}; copy all the files export.py "
                         "--format onnx wrote")
    return OnnxFolder(path, read_labels(path))


class OnnxClassifier(Predicting):
    """A classifier ready to predict from an ONNX export: `OnnxClassifier.load(folder)`, then `predict`."""

    def __init__(self, runtime: onnxruntime.InferenceSession, tokenizer: Tokenizer, labels: LabelInfo, *,
                 batch_size: int = 64, source: str = ""):
        if batch_size < 1:
            raise UsageError(f"batch_size should be a positive integer but the value passed is {batch_size}")
        self.runtime = runtime
        self.label_names = labels.label_names
        self.text_columns = labels.text_columns
        self.is_pair = labels.is_pair
        self.problem_type = labels.problem_type
        self.threshold = labels.threshold  # multi-label: a label is predicted above it (None: 0.5)
        self.batch_size = batch_size
        self.source = source
        self.truncated = 0  # texts cut to max_length so far
        self.inputs = [i.name for i in runtime.get_inputs()]
        unknown = [name for name in self.inputs if name not in FEEDS]
        if unknown:
            raise UsageError(f"the ONNX graph in {source!r} takes input {unknown[0]!r}, which a tokenizer does not "
                             f"give (known: {', '.join(FEEDS)}); export it again with export.py --format onnx")
        width = runtime.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(labels.label_names):
            raise UsageError(f"the ONNX graph in {source!r} gives {width} outputs but its labels.json names "
                             f"{len(labels.label_names)}; the files come from different exports, so export again")
        padding = tokenizer.padding or {}
        if "pad_id" not in padding:
            raise UsageError(f"{TOKENIZER_JSON} in {source!r} names no padding token; export it again with "
                             "export.py --format onnx")
        self.pad_id = padding["pad_id"]
        self.max_length = labels.max_seq_length or (tokenizer.truncation or {}).get("max_length") or 512
        # Two copies: one cuts at max_length as training did; the other, uncut, tells which texts were cut.
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.max_length, strategy="longest_first",
                                    direction=(tokenizer.truncation or {}).get("direction", "right"))
        self.tokenizer = tokenizer
        self._uncut = Tokenizer.from_str(tokenizer.to_str())
        self._uncut.no_truncation()

    @property
    def label_info(self) -> LabelInfo:
        """What labels.json says of this classifier (its label names, inputs, problem type, threshold)."""
        return LabelInfo(label_names=list(self.label_names), text_columns=list(self.text_columns),
                         max_seq_length=self.max_length, problem_type=self.problem_type, threshold=self.threshold)

    @classmethod
    def load(cls, folder: str | Path, *, batch_size: int = 64, threads: int | None = None) -> "OnnxClassifier":
        """Load an export written by export.py --format onnx; `threads`: onnxruntime's intra-op threads (default:
        one per physical core). Raises UsageError for a missing or damaged file."""
        return cls.from_folder(read_export(Path(folder).expanduser()), batch_size=batch_size, threads=threads)

    @classmethod
    def from_folder(cls, folder: OnnxFolder, *, batch_size: int = 64, threads: int | None = None) -> "OnnxClassifier":
        """`load` for a folder already read with `read_export` (so that a caller can check its input first)."""
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: the graph optimiser's notes are not the user's concern
        if threads:
            options.intra_op_num_threads = threads
        try:
            runtime = onnxruntime.InferenceSession(str(folder.path / ONNX_FILE), options,
                                                   providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own error types for a damaged graph
            raise UsageError(f"{str(folder.path / ONNX_FILE)!r} could not be loaded ({str(err).splitlines()[0]}); "
                             "copy it again, or export it again with export.py --format onnx") from None
        try:
            tokenizer = Tokenizer.from_file(str(folder.path / TOKENIZER_JSON))
        except Exception as err:  # tokenizers raises a bare Exception for a damaged file
            raise UsageError(f"{str(folder.path / TOKENIZER_JSON)!r} could not be loaded "
                             f"({str(err).splitlines()[0]}); copy it again from the export") from None
        return cls(runtime, tokenizer, folder.labels, batch_size=batch_size, source=str(folder.path))

    def _encode(self, rows: Sequence[Row]) -> tuple[list, list[bool]]:
        inputs = [r.text for r in rows] if not self.is_pair else [(r.text, r.pair) for r in rows]
        encodings = self.tokenizer.encode_batch(inputs)
        # Only a text that fills max_length can have been cut; encode just those again, uncut, to find out.
        full = [i for i, e in enumerate(encodings) if len(e.ids) >= self.max_length]
        cut = [False] * len(rows)
        for i, e in zip(full, self._uncut.encode_batch([inputs[i] for i in full])):
            cut[i] = len(e.ids) > self.max_length
        return encodings, cut

    def _pad(self, encodings: list, order: list[int]) -> dict[str, np.ndarray]:
        width = max(len(encodings[i].ids) for i in order)
        batch = {}
        for name in self.inputs:
            field = FEEDS[name]
            array = np.full((len(order), width), self.pad_id if name == "input_ids" else 0, dtype=np.int64)
            for j, i in enumerate(order):
                values = getattr(encodings[i], field)
                array[j, :len(values)] = values
            batch[name] = array
        return batch

    def _logits(self, rows: Sequence[Row]) -> tuple[np.ndarray, list[bool]]:
        encodings, cut = self._encode(rows)
        order = sorted(range(len(rows)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(rows), len(self.label_names)), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            out[chunk] = self.runtime.run(None, self._pad(encodings, chunk))[0]
        return out, cut

    def predict_rows(self, rows: Sequence[Row]) -> list[Prediction]:
        """Predictions for `rows`, in their order. Raises UsageError for an empty text or the wrong arity."""
        if not rows:
            return []
        check_rows(rows, pair=self.is_pair, source=self.source)
        logits, cut = self._logits(rows)
        self.truncated += sum(cut)
        return from_logits(rows, logits, self.label_info, cut)
