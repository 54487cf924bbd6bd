"""A from-scratch LoRA layer that plugs into PEFT, interchangeable with PEFT's own (see `lorakit.adapters.lora`).

It lives inside the lorakit package: installed as a top-level `adapters` package it would collide with
AdapterHub's PyPI package of that name (both would own site-packages/adapters/).
"""

from .lora import LoraLinear, load_adapter, register, validate_lora_settings

__all__ = ["LoraLinear", "load_adapter", "register", "validate_lora_settings"]
