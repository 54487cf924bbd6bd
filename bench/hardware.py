"""What the hardware allows: measured matmul throughput at the model's shapes, and the FLOPs a sample costs.

    python -m bench.hardware [--tokens 2048] [--hidden 384] [--intermediate 1536] [--threads 2]

Prints the best-of-repeats GFLOP/s of `torch.matmul` in fp32 and bf16 for the three weight shapes of a BERT
layer (hidden x hidden, hidden -> intermediate, intermediate -> hidden), and their mix as one training step
runs them. The benchmark divides the useful FLOPs of a training sample (`lora_train_flops`) by its measured
time and reports the result as a fraction of that bound.
"""

from __future__ import annotations

import argparse
import time

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _best_seconds(fn, repeats: int, inner: int) -> float:
    fn()  # the first call builds the kernel (oneDNN primitive) for this shape
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - start) / inner)
    return best


def matmul_gflops(tokens: int, n_in: int, n_out: int, dtype: torch.dtype, *, repeats: int = 5) -> float:
    """Best-of-`repeats` GFLOP/s of x @ W.T for x (tokens, n_in) and W (n_out, n_in): nn.Linear's own layout."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, n_in, generator=gen).to(dtype)
    w = torch.randn(n_out, n_in, generator=gen).to(dtype)
    flops = 2 * tokens * n_in * n_out
    inner = max(1, int(2e9 // flops))  # ~10 ms per timed repeat at 200 GFLOP/s: well above timer noise
    seconds = _best_seconds(lambda: torch.matmul(x, w.t()), repeats, inner)
    return flops / seconds / 1e9


def matmul_bound(hidden: int, intermediate: int, *, tokens: int = 2048, threads: int = 2,
                 repeats: int = 5) -> dict:
    """Measured matmul throughput (GFLOP/s) per dtype and shape, and per dtype the training-step mix.

    The mix weights each shape by the FLOPs a frozen layer spends on it in forward plus input-gradient
    backward: 4 hidden x hidden projections both ways, and the FFN's two matmuls, each of which runs in the
    other's shape on the way back. Returns {"fp32": {"hh": .., "hi": .., "ih": .., "mix": ..}, "bf16": {..},
    "tokens": .., "threads": ..}.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out: dict = {"tokens": tokens, "threads": threads}
        shapes = {"hh": (hidden, hidden), "hi": (hidden, intermediate), "ih": (intermediate, hidden)}
        work = {"hh": 8 * hidden * hidden, "hi": 2 * hidden * intermediate, "ih": 2 * hidden * intermediate}
        for name, dtype in DTYPES.items():
            rates = {s: matmul_gflops(tokens, *shapes[s], dtype, repeats=repeats) for s in shapes}
            rates["mix"] = sum(work.values()) / sum(work[s] / rates[s] for s in shapes)
            out[name] = rates
        return out
    finally:
        torch.set_num_threads(previous)


def best_of(bounds: list[dict]) -> dict:
    """The element-wise best of several `matmul_bound` results (the machine's least disturbed moment)."""
    best = dict(bounds[0])
    for dtype in DTYPES:
        best[dtype] = {k: max(b[dtype][k] for b in bounds) for k in bounds[0][dtype]}
    return best


def model_shapes(config) -> dict:
    """The sizes the FLOP count needs, from a BERT- or RoBERTa-like transformers config."""
    return {"model_type": config.model_type, "layers": config.num_hidden_layers, "hidden": config.hidden_size,
            "intermediate": config.intermediate_size, "num_labels": config.num_labels}


def _head_train_flops(shapes: dict) -> int:
    h, c = shapes["hidden"], shapes["num_labels"]
    # BERT: frozen pooler (forward + input gradient) and a trainable classifier; RoBERTa's head is all trainable.
    return (4 if shapes["model_type"] == "bert" else 6) * h * h + 6 * h * c


def lora_train_flops(shapes: dict, tokens: int, *, r: int = 8, n_targets: int = 2) -> int:
    """FLOPs of one LoRA training step (forward and backward) on one sample of `tokens` tokens, LoRA on query
    and value (`n_targets` of the four h x h projections), every matmul counted, nothing else.

    With hidden h, FFN width i, L layers, N = 4h^2 + 2hi frozen weights per layer, T tokens, C labels:
      L (4 N T + 12 h T^2 + 12 n r h T) - (6 h^2 T + 2 h T^2 + 2 n r h T) + head
    4NT: frozen matmuls forward and input gradient (no weight gradient); 12hT^2: attention scores and their
    gradients; 12nrhT: LoRA A and B forward, input and weight gradients. The first layer's input needs no
    gradient (the embeddings are frozen), so its query/key/value and LoRA A input gradients and the key side of
    its score gradient are never computed. head: 6h^2 + 6hC for RoBERTa's trainable head, 4h^2 + 6hC for BERT's
    frozen pooler and trainable classifier. tests/test_bench.py checks it against torch's FLOP counter.
    """
    h, i, layers, n = shapes["hidden"], shapes["intermediate"], shapes["layers"], n_targets
    frozen = 4 * h * h + 2 * h * i
    per_layer = 4 * frozen * tokens + 12 * h * tokens * tokens + 12 * n * r * h * tokens
    first_layer_saving = 6 * h * h * tokens + 2 * h * tokens * tokens + 2 * n * r * h * tokens
    return layers * per_layer - first_layer_saving + _head_train_flops(shapes)


def lora_forward_flops(shapes: dict, tokens: int, *, r: int = 8, n_targets: int = 2) -> int:
    """FLOPs of a forward pass on one sample (evaluation, inference): L (2NT + 4hT^2 + 4nrhT) + 2h^2 + 2hC."""
    h, i, layers, n = shapes["hidden"], shapes["intermediate"], shapes["layers"], n_targets
    frozen = 4 * h * h + 2 * h * i
    per_layer = 2 * frozen * tokens + 4 * h * tokens * tokens + 4 * n * r * h * tokens
    return layers * per_layer + 2 * h * h + 2 * h * shapes["num_labels"]


def main(argv: list[str] | None = None) -> dict:
    """Measure and print the matmul bound; returns `matmul_bound`'s dict."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2048, help="rows of the activation matrix (default 2048)")
    parser.add_argument("--hidden", type=int, default=384, help="hidden size (default 384, MiniLM-L6)")
    parser.add_argument("--intermediate", type=int, default=1536, help="FFN width (default 1536)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats, best kept (default 5)")
    args = parser.parse_args(argv)
    bound = matmul_bound(args.hidden, args.intermediate, tokens=args.tokens, threads=args.threads,
                         repeats=args.repeats)
    for dtype in DTYPES:
        rates = bound[dtype]
        print(f"{dtype}: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()) + " GFLOP/s")
    return bound


if __name__ == "__main__":
    main()
