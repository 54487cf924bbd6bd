"""LoRA's own settings checked without torch, so that a bad rank or dropout fails before anything loads."""

from __future__ import annotations

import math
import numbers


def validate_lora_settings(r, alpha, dropout) -> None:
    """Return None if r is a positive integer, alpha a positive number and dropout in [0, 1).

    Otherwise raise one ValueError that names every bad value and how to fix it (as the CLI flag).
    """
    problems = []
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r <= 0:
        problems.append(
            f"lora_r should be a positive integer but the value passed is {r!r}; set --lora_r to 1 or more"
        )
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < math.inf:
        problems.append(
            f"lora_alpha should be a positive number but the value passed is {alpha!r}; "
            "set --lora_alpha above 0 (commonly 2 * lora_r)"
        )
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        problems.append(
            f"lora_dropout should be in [0, 1) but the value passed is {dropout!r}; "
            "set --lora_dropout to 0 (off) or a small probability such as 0.1"
        )
    if problems:
        raise ValueError(". ".join(problems))
