"""Predictions from a model's logits, and how they are printed: shared by the torch and ONNX paths.

NumPy only: the ONNX path predicts in a process that never imports torch. One problem type per model
(labels.json): a class and its probability (single-label, softmax), every label over the threshold with its
probability (multi-label, sigmoid), or a score (regression).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from .errors import UsageError
from .runfolder import MULTI_LABEL, REGRESSION, SINGLE_LABEL, LabelInfo
from .textio import Row

DEFAULT_THRESHOLD = 0.5


@dataclass
class Prediction:
    """One row's prediction. Single-label: `label` and its probability `score`; multi-label: `labels`, each label
    over the threshold with its probability, most probable first (`label`, `score` None); regression: the
    predicted `score` (`label` None). `scores` holds every label's probability (empty for a regression)."""

    text: str
    label: str | None
    score: float | None
    scores: dict[str, float]
    text_pair: str | None = None
    line: int | None = None
    truncated: bool = False
    problem_type: str = SINGLE_LABEL
    labels: list[tuple[str, float]] | None = None

    def top(self, k: int) -> list[tuple[str, float]]:
        return sorted(self.scores.items(), key=lambda kv: -kv[1])[:k]

    def as_record(self, top_k: int | None = None) -> dict:
        """A JSON-able dict: text(, text_pair), then label, score, scores (single-label) or labels (a list of
        {label, score}), scores (multi-label) or score (regression), then (top_k)(, line)(, truncated)."""
        record = {"text": self.text}
        if self.text_pair is not None:
            record["text_pair"] = self.text_pair
        if self.problem_type == REGRESSION:
            record["score"] = self.score
        elif self.problem_type == MULTI_LABEL:
            record.update(labels=[{"label": label, "score": score} for label, score in self.labels or []],
                          scores=self.scores)
        else:
            record.update(label=self.label, score=self.score, scores=self.scores)
        if top_k and self.scores:
            record["top_k"] = [{"label": label, "score": score} for label, score in self.top(top_k)]
        if self.line is not None:
            record["line"] = self.line
        if self.truncated:
            record["truncated"] = True
        return record


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32 (logits of any float dtype)."""
    z = logits.astype(np.float32)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float32, without overflow for large negative logits."""
    z = np.asarray(logits, dtype=np.float32)
    return np.exp(-np.logaddexp(np.float32(0), -z)).astype(np.float32)


def from_logits(rows: Sequence, logits: np.ndarray, labels: LabelInfo | Sequence[str], cut: Sequence[bool],
                threshold: float | None = None) -> list[Prediction]:
    """One Prediction per row (lorakit.textio.Row: text, pair, line) from its logits, in row order.

    `labels` is the model's LabelInfo (labels.json), or its label names alone for a single-label classifier;
    `threshold` overrides the multi-label threshold it holds (0.5 when it holds none)."""
    info = labels if isinstance(labels, LabelInfo) else LabelInfo(label_names=list(labels), text_columns=[])
    names, kind = info.label_names, info.problem_type
    out = []
    if kind == REGRESSION:
        values = np.asarray(logits, dtype=np.float32).reshape(len(rows), -1)[:, 0].tolist()
        for row, value, was_cut in zip(rows, values, cut):
            out.append(Prediction(text=row.text, text_pair=row.pair, line=row.line, truncated=was_cut, label=None,
                                  score=value, scores={}, problem_type=kind))
        return out
    if kind == MULTI_LABEL:
        limit = threshold if threshold is not None else info.threshold if info.threshold is not None \
            else DEFAULT_THRESHOLD
        for row, p, was_cut in zip(rows, sigmoid(logits).tolist(), cut):
            over = sorted(((n, s) for n, s in zip(names, p) if s > limit), key=lambda kv: -kv[1])
            out.append(Prediction(text=row.text, text_pair=row.pair, line=row.line, truncated=was_cut, label=None,
                                  score=None, scores=dict(zip(names, p)), problem_type=kind, labels=over))
        return out
    for row, p, was_cut in zip(rows, softmax(logits).tolist(), cut):
        best = max(range(len(p)), key=p.__getitem__)
        out.append(Prediction(text=row.text, text_pair=row.pair, line=row.line, truncated=was_cut,
                              label=names[best], score=p[best], scores=dict(zip(names, p))))
    return out


def format_line(prediction: Prediction, top_k: int | None) -> str:
    """One line per prediction, then the text: label<TAB>probability (single-label; top_k pairs of them with
    --top_k), label<TAB>probability for every label over the threshold (multi-label; top_k: the k most
    probable), score (regression)."""
    text = prediction.text if prediction.text_pair is None else f"{prediction.text}\t{prediction.text_pair}"
    if prediction.problem_type == REGRESSION:
        return f"{prediction.score:.4f}\t{text}"
    if top_k:
        shown = prediction.top(top_k)
    elif prediction.problem_type == MULTI_LABEL:
        shown = prediction.labels or []
    else:
        shown = [(prediction.label, prediction.score)]
    return "\t".join([*(f"{label}\t{score:.4f}" for label, score in shown), text])


class Predicting:
    """`predict` and `predict_stream` for a classifier that has `predict_rows(rows) -> list[Prediction]` (the torch
    path's Classifier and the ONNX path's OnnxClassifier)."""

    def predict_rows(self, rows: Sequence[Row]) -> list[Prediction]:
        raise NotImplementedError

    def predict(self, texts: str | Sequence[str], pairs: Sequence[str] | None = None) -> list[Prediction]:
        """Predictions for one text or many (and their second sentences for a pair classifier), in input order."""
        if isinstance(texts, str):
            texts = [texts]
        if pairs is not None and len(pairs) != len(texts):
            raise UsageError(f"{len(texts)} texts but {len(pairs)} second sentences; pass one --pair per text")
        return self.predict_rows([Row(t, pairs[i] if pairs is not None else None) for i, t in enumerate(texts)])

    def predict_stream(self, rows: Iterable[Row], chunk_size: int = 4096, progress=None) -> Iterator[Prediction]:
        """Predictions for an iterable of rows of any length, in input order, holding `chunk_size` rows at a
        time (memory stays bounded); `progress` (a tqdm bar) advances per chunk."""
        chunk: list[Row] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == chunk_size:
                yield from self.predict_rows(chunk)
                if progress is not None:
                    progress.update(len(chunk))
                chunk = []
        yield from self.predict_rows(chunk)
        if progress is not None:
            progress.update(len(chunk))
