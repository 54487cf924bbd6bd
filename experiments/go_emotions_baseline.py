"""GoEmotions (simplified) validation split: the always-`neutral` baseline's micro-F1, macro-F1 and exact match,
computed by lorakit.metrics as a trained run's are.

    HF_DATASETS_OFFLINE=1 python experiments/go_emotions_baseline.py > experiments/go_emotions/baseline.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # lorakit

from lorakit.metrics import compute  # noqa: E402


def main() -> None:
    import datasets

    split = datasets.load_dataset(str(ROOT.parent / "shared" / "data" / "go_emotions"), "simplified",
                                  split="validation")
    names = split.features["labels"].feature.names
    truth = np.zeros((len(split), len(names)), dtype=np.int64)
    for row, ids in enumerate(split["labels"]):
        truth[row, ids] = 1
    always = np.zeros_like(truth)
    always[:, names.index("neutral")] = 1
    scores = compute(["f1_micro", "f1_macro", "exact_match"], truth, always)
    print(f"GoEmotions validation, {len(split)} rows, {len(names)} labels; always 'neutral':")
    for name, value in scores.items():
        print(f"{name}: {value:.4f}")


if __name__ == "__main__":
    main()
