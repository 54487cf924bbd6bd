"""Dropout whose keep mask costs a quarter of torch's random draws, for training on CPU.

On CPU, `nn.Dropout` draws one random number per element (`bernoulli_`, 4 ns an element here), so dropout
(embeddings, attention output, feed-forward output, LoRA's input dropout) took 36% of a LoRA step's CPU time on
SST-2 lengths (`python -m bench.step_profile`), about as much as the matrix multiplies. `FastDropout` draws 64-bit
words from the same generator (`random_`, so `set_seed` makes it reproducible) and compares each 16-bit quarter
against round(p * 65536): one draw per four elements. The drop probability is thereby rounded
to a multiple of 1/65536 (0.1 -> 0.100006) and the kept values are scaled by the inverse of the rounded keep
probability, so the expectation stays the input's. The mask is applied by AND-ing each element's bits with 0 or
all ones (a multiply by a bool tensor converts every bool to the float type one element at a time, which took
longer than drawing the mask); backward keeps it as one byte an element, where torch's dropout keeps a noise
tensor of the input's dtype. A dropped element is +0 whatever it held (NaN and inf included).

CUDA's fused dropout kernel is faster than this, so training swaps these in on CPU only (recipe key
`fast_dropout`), and drops the attention probabilities with `fast_dropout` too (`lorakit.cpu.attention`).
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


# Integer types as wide as a float type's elements: a kept element's bits are AND-ed with all ones, a dropped one's
# with 0.
_SAME_WIDTH_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _keep(x: torch.Tensor, bits: torch.Tensor, scale: float) -> torch.Tensor:
    """x where `bits` (int8: -1 keep, 0 drop) keeps it, +0 elsewhere, times scale."""
    width = _SAME_WIDTH_INT.get(x.element_size()) if x.is_floating_point() else None
    if width is None:  # 1-byte floats, integers: the plain multiply
        return x * bits.neg().to(x.dtype) * scale
    return x.view(width).bitwise_and(bits.to(width)).view(x.dtype).mul_(scale)


class _ScaleByMask(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        bits = mask.view(torch.int8).neg()  # True -> -1: all bits set once widened
        ctx.save_for_backward(bits)
        ctx.scale = scale
        return _keep(x, bits, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (bits,) = ctx.saved_tensors
        return _keep(grad, bits, ctx.scale), None, None


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
