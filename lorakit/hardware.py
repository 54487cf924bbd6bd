"""Pick device-dependent TrainingArguments (tf32, bf16, use_cpu) from what the hardware really supports."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_bf16() -> bool:
    """True where the CPU computes bf16 matmuls natively (AVX-512-BF16 or AMX), so bf16 autocast pays."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cuda_has_tf32() -> bool:
    """TF32 tensor cores exist from Ampere (compute capability 8.0) on."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def device_name() -> str:
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name()}, {torch.cuda.device_count()} visible)"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def resolve_precision(training: dict) -> tuple[dict, list[str]]:
    """Fill tf32/bf16/use_cpu where the recipe left them open or asked for what the device lacks.

    Returns the updated TrainingArguments kwargs and the log lines that explain each decision.
    """
    out = dict(training)
    notes = []
    cuda = torch.cuda.is_available()
    if not cuda:
        # Trainer refuses bf16 on a machine without a GPU unless it is told to use the CPU.
        out.setdefault("use_cpu", True)
    if out.get("tf32") is None or out.get("tf32"):
        if cuda_has_tf32():
            out["tf32"] = True
        else:
            if out.get("tf32") and cuda:  # on CPU, precision_label says "tf32 n/a on CPU"
                notes.append("tf32 requested but this GPU predates Ampere: matmuls stay in full fp32")
            out["tf32"] = None  # None leaves torch's matmul precision untouched
    if "bf16" not in out and not out.get("fp16"):
        if cuda:
            out["bf16"] = torch.cuda.is_bf16_supported()
        else:
            out["bf16"] = cpu_has_bf16()
    elif out.get("bf16") and not cuda and not cpu_has_bf16():
        notes.append("bf16 requested but this CPU has no native bf16 (AVX-512-BF16/AMX): it will be slow")
    return out, notes


def precision_label(training: dict, tf32_requested: bool = False) -> str:
    """The run's precision in a few words, e.g. "bf16 autocast (fp32 master weights); tf32 n/a on CPU"."""
    if training.get("bf16"):
        label = "bf16 autocast (fp32 master weights)"
    elif training.get("fp16"):
        label = "fp16 autocast (fp32 master weights)"
    else:
        label = "fp32" + (" with tf32 matmuls" if training.get("tf32") else "")
    if tf32_requested and not torch.cuda.is_available():
        label += "; tf32 n/a on CPU"
    return label
