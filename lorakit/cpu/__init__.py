"""Speed-ups for training on a CPU, each measured against the stock path in bench/ and switched on here alone.

- `dropout`: FastDropout, masks drawn four elements per 64-bit random word (recipe key `fast_dropout`);
- `attention`: SDPA with the probabilities' dropout drawn the same way, SDPA's math kernel on short rows;
- `allocator`: mimalloc under train.py, opt-in (`LORAKIT_ALLOCATOR=mimalloc`), as it changes how the process
  starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `allocator` is imported by train.py before torch may load (and `--help` never loads it)
    import torch


def speed_up(model: torch.nn.Module) -> list[str]:
    """Swap the CPU dropout and attention into `model` (training on a CPU with `fast_dropout`); returns the log
    lines saying what changed."""
    from .attention import MATH_KERNEL_MAX_TOKENS, use_cpu_attention
    from .dropout import use_fast_dropout

    lines = [f"dropout layers drawing their masks four elements per random word (CPU; fast_dropout): "
             f"{use_fast_dropout(model)}"]
    if use_cpu_attention(model):
        lines.append("attention: SDPA with the probabilities' dropout drawn the same way, and SDPA's math kernel "
                     f"without dropout on rows up to {MATH_KERNEL_MAX_TOKENS} tokens (CPU training; "
                     "lorakit/cpu/attention.py)")
    return lines
