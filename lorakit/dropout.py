"""Dropout whose keep mask costs a quarter of torch's random draws, for training on CPU.

On CPU, `nn.Dropout` draws one random number per element (`bernoulli_`, 4 ns an element here), so dropout
(embeddings, attention output, feed-forward output, LoRA's input dropout) took 36% of a LoRA step's CPU time on
SST-2 lengths (`python -m bench.step_profile`), about as much as the matrix multiplies. `FastDropout` draws 64-bit
words from the same generator (`random_`, so `set_seed` makes it reproducible) and compares each 16-bit quarter
against round(p * 65536): one draw per four elements. The drop probability is thereby rounded
to a multiple of 1/65536 (0.1 -> 0.100006) and the kept values are scaled by the inverse of the rounded keep
probability, so the expectation stays the input's. Backward keeps the mask as bool (1 byte an element, where
torch's dropout keeps a noise tensor of the input's dtype).

CUDA's fused dropout kernel is faster than this, so training swaps these in on CPU only (recipe key
`fast_dropout`), and drops the attention probabilities with `fast_dropout` too (`lorakit.attention`).
"""

from __future__ import annotations

import torch
from torch import nn

LEVELS = 1 << 16  # a 16-bit quarter of a random word


def keep_mask(shape: torch.Size, p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Bool tensor of `shape`: True with probability 1 - round(p * 65536) / 65536, four elements per 64-bit draw."""
    n = shape.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), None)
    return (words.view(torch.int16)[:n] >= -(LEVELS >> 1) + round(p * LEVELS)).view(shape)


class _ScaleByMask(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return x.mul(mask).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad.mul(mask).mul_(ctx.scale), None, None


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout of `x` with the mask from `keep_mask`, kept values scaled to keep the expectation."""
    dropped = round(p * LEVELS)
    if dropped == 0:
        return x
    if dropped >= LEVELS:
        return x * 0
    return _ScaleByMask.apply(x, keep_mask(x.shape, p, x.device), LEVELS / (LEVELS - dropped))


class FastDropout(nn.Dropout):
    """nn.Dropout with the mask from `keep_mask`; the same module otherwise (`p`, eval mode, state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return fast_dropout(x, self.p)


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every nn.Dropout with p > 0 in `model` (LoRA's included) by a FastDropout; returns how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                fast = FastDropout(child.p, child.inplace)
                fast.train(child.training)
                setattr(parent, name, fast)
                count += 1
    return count
