"""Predictions from a classifier's logits, and how they are printed: shared by the torch and ONNX paths.

NumPy only: the ONNX path predicts in a process that never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import UsageError
from .runfolder import SINGLE_LABEL, LabelInfo


@dataclass
class Prediction:
    """The predicted label and its probability, and every label's probability in label order."""

    text: str
    label: str
    score: float
    scores: dict[str, float]
    text_pair: str | None = None
    line: int | None = None
    truncated: bool = False

    def top(self, k: int) -> list[tuple[str, float]]:
        return sorted(self.scores.items(), key=lambda kv: -kv[1])[:k]

    def as_record(self, top_k: int | None = None) -> dict:
        """A JSON-able dict: text(, text_pair), label, score, scores(, top_k)(, line)(, truncated)."""
        record = {"text": self.text}
        if self.text_pair is not None:
            record["text_pair"] = self.text_pair
        record.update(label=self.label, score=self.score, scores=self.scores)
        if top_k:
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


def from_logits(rows: Sequence, logits: np.ndarray, label_names: list[str], cut: Sequence[bool]) -> list[Prediction]:
    """One Prediction per row (lorakit.textio.Row: text, pair, line) from its logits, in row order."""
    out = []
    for row, p, was_cut in zip(rows, softmax(logits).tolist(), cut):
        best = max(range(len(p)), key=p.__getitem__)
        out.append(Prediction(text=row.text, text_pair=row.pair, line=row.line, truncated=was_cut,
                              label=label_names[best], score=p[best], scores=dict(zip(label_names, p))))
    return out


def decode(rows: Sequence, logits: np.ndarray, info: LabelInfo, cut: Sequence[bool]) -> list[Prediction]:
    """One Prediction per row from the model's outputs, read as labels.json (`info`) says: its problem type, label
    names and threshold. Raises UsageError for a problem type that has no predictions here yet."""
    if info.problem_type != SINGLE_LABEL:
        raise UsageError(f"this classifier's labels.json has problem_type {info.problem_type!r}, which this version "
                         f"of the kit cannot print predictions for (only {SINGLE_LABEL!r}); update the kit")
    return from_logits(rows, logits, info.label_names, cut)


def format_line(prediction: Prediction, top_k: int | None) -> str:
    """label<TAB>score (top_k pairs of them with --top_k), then the text: one line per prediction."""
    best = prediction.top(top_k) if top_k else [(prediction.label, prediction.score)]
    text = prediction.text if prediction.text_pair is None else f"{prediction.text}\t{prediction.text_pair}"
    return "\t".join([*(f"{label}\t{score:.4f}" for label, score in best), text])
