"""A from-scratch LoRA layer that plugs into PEFT, interchangeable with PEFT's own (see `adapters.lora`)."""

from .lora import LoraLinear, load_adapter, register, validate_lora_settings

__all__ = ["LoraLinear", "load_adapter", "register", "validate_lora_settings"]
