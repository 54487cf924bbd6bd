"""Where a kit training step spends its time, and what storing the frozen linears in bf16 and FastDropout save.

    python -m bench.step_profile [--steps 30] [--batch 16] [--tokens 16]

MiniLM-L6 with PEFT LoRA r=8 on query,value (dropout 0.1), bf16 autocast, fused AdamW, as train.py runs it on an
AVX-512-BF16 CPU. Three copies of the model take turns step by step: the kit's (frozen nn.Linear layers stored
in bf16 by `lorakit.modeling.store_frozen_linears`, dropout by `lorakit.cpu.dropout.FastDropout`, the attention
probabilities' too by `lorakit.cpu.attention`), one with the frozen linears left in fp32 (autocast casts them at
every step), one with torch's own dropout and transformers' SDPA attention (`fast_dropout: false`); prints the median
step of each and its ratio to the kit's, then the share of CPU time per operator over 10 steps of the kit's copy
(torch.profiler). Last, the kit step's matrix multiplies alone: every mm/addmm/bmm/baddbmm one step dispatches
(forward, backward, optimizer), recorded with their shapes, strides and dtypes, replayed back to back on fresh
tensors of the same layout (one set per op, as the model's layers have their own weights), and set against the
step and against the measured bf16 matmul bound at the step's rows (`bench.hardware`): what the step would take
if everything but its matmuls cost nothing. Then every op of the step (views and in-place updates included),
replayed the same way: the kernels' own time, and the rest of the step (Python, autograd, module calls), which
no kernel makes faster.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

KIT = "kit (bf16 frozen linears, FastDropout, lorakit attention)"


def _model(store: bool, fast_dropout: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from bench.run import minilm_path
    from lorakit import modeling
    from lorakit.cpu.attention import use_cpu_attention
    from lorakit.cpu.dropout import use_fast_dropout

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.1,
                                             target_modules=["query", "value"]))
    if store:
        modeling.store_frozen_linears(model, torch.bfloat16)
    if fast_dropout:  # as training does on CPU with `fast_dropout` on: the attention probabilities' dropout too
        use_fast_dropout(model)
        use_cpu_attention(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)
    return model.train(), optimizer


def _spec(value):
    """A tensor as (size, stride, dtype), a list or tuple of them item by item; any other argument as itself."""
    if isinstance(value, (list, tuple)):
        return type(value)(_spec(v) for v in value)
    return (tuple(value.shape), value.stride(), value.dtype) if isinstance(value, torch.Tensor) else value


def _is_spec(value) -> bool:
    return isinstance(value, tuple) and len(value) == 3 and isinstance(value[2], torch.dtype)


MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
           torch.ops.aten.baddbmm.default}


def _make(spec):
    """A fresh tensor for a (size, stride, dtype) spec (random floats, zero integers: valid indices), recursively."""
    if _is_spec(spec):
        size, stride, dtype = spec
        fresh = torch.empty_strided(size, stride, dtype=dtype)
        return fresh.normal_() if dtype.is_floating_point else fresh.zero_()
    if isinstance(spec, (list, tuple)):
        return type(spec)(_make(v) for v in spec)
    return spec


@dataclass(frozen=True)
class OpCall:
    """One op a step dispatched: the op and, per argument, a tensor's (size, stride, dtype) or the value."""

    op: object
    args: tuple
    kwargs: tuple

    def _operand_sizes(self) -> tuple[tuple, tuple]:
        """The two multiplied operands' sizes: the last two tensors (addmm and baddbmm lead with the added one)."""
        (a_size, _, _), (b_size, _, _) = [a for a in self.args if _is_spec(a)][-2:]
        return a_size, b_size

    @property
    def flops(self) -> int:
        a_size, b_size = self._operand_sizes()
        batch = a_size[0] if len(a_size) == 3 else 1
        return 2 * batch * a_size[-2] * a_size[-1] * b_size[-1]

    @property
    def kind(self) -> str:
        """For a matmul: attention's batched products, the thin ones (LoRA's rank-8 factors, the classifier), or
        full-width; for any other op: a view (no data touched: its time is the call's own cost) or a kernel."""
        if self.op not in MATMULS:
            return "views (no data touched)" if self.op.is_view else "other kernels (elementwise, norms, casts, ...)"
        if self.op in (torch.ops.aten.bmm.default, torch.ops.aten.baddbmm.default):
            return "attention (bmm)"
        a_size, b_size = self._operand_sizes()
        return "rank <= 8 or <= 8 labels (LoRA, classifier)" if min(*a_size, *b_size) <= 8 else "full-width"

    def tensors(self) -> tuple[tuple, dict]:
        return tuple(_make(a) for a in self.args), {k: _make(v) for k, v in self.kwargs}


class RecordOps(TorchDispatchMode):
    """Records every op dispatched inside it (the autograd engine runs CPU backward on this thread)."""

    def __init__(self):
        super().__init__()
        self.calls: list[OpCall] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.calls.append(OpCall(func, tuple(_spec(a) for a in args), tuple((k, _spec(v)) for k, v in kwargs.items())))
        return func(*args, **kwargs)


def replayable(calls: list[OpCall]) -> tuple[list, int]:
    """(call, args, kwargs) on fresh tensors for every call that runs on them, and how many do not (e.g. an op
    whose fresh zero indices or random values it rejects)."""
    prepared, failed = [], 0
    for call in calls:
        args, kwargs = call.tensors()
        try:
            call.op(*args, **kwargs)
        except RuntimeError:
            failed += 1
            continue
        prepared.append((call, *call.tensors()))
    return prepared, failed


def replay_seconds(prepared: list, repeats: int, group=lambda call: call.kind) -> tuple[float, dict[str, float]]:
    """Median seconds of replaying `prepared` calls back to back, and the median seconds per group of calls
    (`group(call)`: by default the call's kind)."""
    totals, by_kind = [], {group(c): [] for c, _, _ in prepared}
    for i in range(repeats + 1):
        kinds = dict.fromkeys(by_kind, 0.0)
        start = time.perf_counter()
        for call, args, kwargs in prepared:
            t0 = time.perf_counter()
            call.op(*args, **kwargs)
            kinds[group(call)] += time.perf_counter() - t0
        if i:  # the first pass builds the kernels
            totals.append(time.perf_counter() - start)
            for kind, seconds in kinds.items():
                by_kind[kind].append(seconds)
    return statistics.median(totals), {k: statistics.median(v) for k, v in by_kind.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per copy (default 30)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=16, help="tokens per row (default 16, SST-2's lengths)")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    x = torch.randint(1000, 20000, (args.batch, args.tokens), generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 2, (args.batch,), generator=torch.Generator().manual_seed(1))

    def step(model, optimizer):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=x, attention_mask=torch.ones_like(x), labels=y).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    copies = {KIT: _model(True, True), "frozen linears fp32": _model(False, True),
              "torch's dropout and SDPA's": _model(True, False)}
    times = {name: [] for name in copies}
    for i in range(args.steps + 3):
        for name, (model, optimizer) in copies.items():
            start = time.perf_counter()
            step(model, optimizer)
            if i >= 3:  # warm-up steps build the kernels
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print(f"batch {args.batch} x {args.tokens} tokens, bf16 autocast, {torch.get_num_threads()} threads, "
          f"median of {args.steps} interleaved steps after 3 warm-up:")
    for name, ms in medians.items():
        print(f"  {name}: {ms:.1f} ms")
    ratios = {name: ms / medians[KIT] for name, ms in medians.items() if name != KIT}
    for name, ratio in ratios.items():
        print(f"  {name} / kit: {ratio:.2f}x the kit's step")

    from torch.profiler import ProfilerActivity, profile

    model, optimizer = copies[KIT]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            step(model, optimizer)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    shares = {e.key: e.self_cpu_time_total / total for e in events}
    groups = {"matmul (mm, addmm, bmm)": ("aten::mm", "aten::addmm", "aten::bmm"),
              "dtype casts (copy_)": ("aten::copy_",),
              "dropout masks (random_, ge; bernoulli_ inside attention)": ("aten::random_", "aten::ge",
                                                                           "aten::bernoulli_"),
              "elementwise mul, div (dropout's scaling among them)": ("aten::mul", "aten::mul_", "aten::div_"),
              "fused AdamW": ("aten::_fused_adamw_",)}
    print("share of CPU time over 10 steps (torch.profiler, self time):")
    grouped = {}
    for name, ops in groups.items():
        grouped[name] = sum(shares.get(op, 0.0) for op in ops)
        print(f"  {name}: {grouped[name]:.0%}")

    from bench import hardware

    with RecordOps() as recorder:
        step(model, optimizer)
    every_op = recorder.calls
    calls = [c for c in every_op if c.op in MATMULS]
    seconds, by_kind = replay_seconds(replayable(calls)[0], repeats=max(3, args.steps))
    flops = sum(c.flops for c in calls)
    rows = args.batch * args.tokens
    config = model.config
    bound = hardware.matmul_bound(config.hidden_size, config.intermediate_size, tokens=rows,
                                  repeats=2 if rows < 256 else 5)["bf16"]["mix"]
    matmuls = {"calls": len(calls), "gflop": flops / 1e9, "ms": seconds * 1e3,
               "share_of_step": seconds * 1e3 / medians[KIT], "gflops": flops / seconds / 1e9,
               "bound_gflops": bound, "step_gflops": flops / (medians[KIT] / 1e3) / 1e9, "rows": rows}
    print(f"the kit step's matmuls alone ({len(calls)} calls, {flops / 1e9:.2f} GFLOP, replayed back to back on "
          f"fresh tensors, median of {max(3, args.steps)}): {matmuls['ms']:.1f} ms, {matmuls['share_of_step']:.0%} "
          f"of the step; {matmuls['gflops']:.0f} GFLOP/s against the bf16 bound of {bound:.0f} at {rows} rows "
          f"({matmuls['gflops'] / bound:.0%}); the whole step: {matmuls['step_gflops']:.0f} GFLOP/s "
          f"({matmuls['step_gflops'] / bound:.0%})")
    kinds = {}
    for kind, kind_seconds in by_kind.items():
        kind_flops = sum(c.flops for c in calls if c.kind == kind)
        kinds[kind] = {"calls": sum(c.kind == kind for c in calls), "ms": kind_seconds * 1e3,
                       "share_of_flops": kind_flops / flops, "gflops": kind_flops / kind_seconds / 1e9}
        print(f"  {kind}: {kinds[kind]['calls']} calls, {kinds[kind]['share_of_flops']:.0%} of the FLOPs, "
              f"{kinds[kind]['ms']:.1f} ms, {kinds[kind]['gflops']:.0f} GFLOP/s")
    matmuls["kinds"] = kinds

    # Every op, matmuls included, replayed alike: what is left of the step is the cost of running it in eager
    # Python (module calls, autograd's graph, autocast's and PEFT's dispatch), which no faster kernel removes.
    prepared, failed = replayable(every_op)
    all_seconds, all_by_kind = replay_seconds(prepared, repeats=max(3, args.steps))
    ops = {"calls": len(every_op), "replayed": len(prepared), "failed": failed, "ms": all_seconds * 1e3,
           "outside_kernels_ms": medians[KIT] - all_seconds * 1e3,
           "kinds": {kind: {"calls": sum(c.kind == kind for c, _, _ in prepared), "ms": s * 1e3}
                     for kind, s in all_by_kind.items()}}
    print(f"every op of the kit step ({len(every_op)} dispatched, {len(prepared)} replayed, {failed} not replayable "
          f"on fresh tensors), replayed back to back: {ops['ms']:.1f} ms of the {medians[KIT]:.1f} ms step; the "
          f"other {ops['outside_kernels_ms']:.1f} ms ({ops['outside_kernels_ms'] / medians[KIT]:.0%}) is Python, "
          f"autograd and module overhead around the ops")
    for kind, figures in ops["kinds"].items():
        print(f"  {kind}: {figures['calls']} calls, {figures['ms']:.1f} ms "
              f"({figures['ms'] * 1e3 / max(figures['calls'], 1):.1f} us a call)")
    _, by_op = replay_seconds(prepared, repeats=max(3, args.steps), group=lambda call: str(call.op))
    top = sorted(by_op.items(), key=lambda item: -item[1])[:12]
    ops["top"] = {name: {"calls": sum(str(c.op) == name for c, _, _ in prepared), "ms": s * 1e3} for name, s in top}
    print("  the ops that take longest, replayed:")
    for name, figures in ops["top"].items():
        print(f"    {name}: {figures['calls']} calls, {figures['ms']:.2f} ms ({figures['ms'] / ops['ms']:.1%})")
    return {"median_ms": medians, "ratios": ratios, "shares": grouped, "matmuls": matmuls, "ops": ops}


if __name__ == "__main__":
    main()
