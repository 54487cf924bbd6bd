"""LoRA for ``nn.Linear``, written out in full so the method can be read in one place.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685) freezes a
pretrained weight W0 (out x in) and learns a low-rank update beside it:

    h = W0 x + (alpha / r) B A x        A: r x in,  B: out x r,  r << min(in, out)

rsLoRA (Kalajdzievski 2023, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA", arXiv:2312.03732;
``use_rslora``) scales by alpha / sqrt(r) instead, so that the update's size does not shrink as r grows.

A starts Kaiming-uniform and B at zero, so an adapted model starts out computing exactly what the base model
does. Dropout, when enabled, acts on the input of the LoRA path only. After training, (alpha / r) B A can be
added into W0 ("merging"), and the layer costs no more than the original one.

DoRA (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation", arXiv:2402.09353; ``use_dora``) splits
the adapted weight into a magnitude m (one trainable number per output, initialised to the row norms of W0) and a
direction that LoRA updates:

    h = m * (W0 + (alpha / r) B A) x / ||W0 + (alpha / r) B A||_row + b

The row norm is treated as a constant in backward (the paper's section 4.3), and merging folds the whole factor
into the weight: W0 <- m / ||W0 + dW||_row * (W0 + dW).

``LoraLinear`` follows PEFT's contract for custom LoRA layers (PEFT's ``docs/source/developer_guides/
custom_models.md``), so PEFT still does the model surgery, freezing, saving and loading. Its state-dict keys
(``...query.lora_A.default.weight``) are those of PEFT's own ``lora.Linear``: adapters saved with either
implementation load with the other.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel
from peft.tuners.lora.layer import LoraLayer
from peft.tuners.tuners_utils import check_adapters_to_merge
from peft.utils.integrations import dequantize_module_weight, gather_params_ctx
from torch import nn

from ..lora_settings import validate_lora_settings

# LoraConfig options that change what a LoRA linear layer computes; LoraLinear implements none of them.
# LoRA variants (aLoRA, ...) are found through PEFT's own `is_lora_variant` field metadata; DoRA is the one
# variant implemented here.
_UNSUPPORTED_OPTIONS = ("lora_bias", "fan_in_fan_out", "use_qalora", "ensure_weight_tying")
_IMPLEMENTED_VARIANTS = ("use_dora",)


def _check_supported(config: LoraConfig) -> None:
    """Raise ValueError naming every option in `config` that LoraLinear does not implement (rsLoRA, ...)."""
    requested = [
        field.name
        for field in dataclasses.fields(config)
        if getattr(config, field.name)
        and (field.name in _UNSUPPORTED_OPTIONS or field.metadata.get("is_lora_variant"))
        and field.name not in _IMPLEMENTED_VARIANTS
    ]
    if config.init_lora_weights not in (True, False):
        requested.append("init_lora_weights")
    if requested:
        settings = ", ".join(f"{name}={getattr(config, name)!r}" for name in requested)
        raise ValueError(
            f"the scratch LoRA layer implements plain LoRA, rsLoRA and DoRA only, but the config sets {settings}; "
            "remove these options or use PEFT's implementation (impl='peft')"
        )


class DoraMagnitude(nn.Module):
    """DoRA's magnitude m, one number per output of the adapted layer. A module holding `weight`, not a bare
    parameter, so that its state-dict key is PEFT's (``lora_magnitude_vector.<name>.weight``)."""

    def __init__(self, norm: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(norm)

    def forward(self, norm: torch.Tensor) -> torch.Tensor:
        """m / `norm`: DoRA's factor on each output, computed in this module's forward so that FSDP and ZeRO-3
        gather m for it."""
        return self.weight / norm


class LoraLinear(nn.Module, LoraLayer):
    """An ``nn.Linear`` with LoRA adapters: h = W0 x + sum over active adapters of (alpha / r) B A x.

    W0 and the bias stay in the frozen ``base_layer``. Each adapter name keys ``lora_A[name].weight`` (A, r x in),
    ``lora_B[name].weight`` (B, out x r), ``lora_dropout[name]``, ``r``, ``lora_alpha`` and ``scaling``
    (alpha / r), as in PEFT's ``lora.Linear``; a DoRA adapter also ``lora_magnitude_vector[name].weight`` (m, out).
    PEFT builds it once `register` has mapped ``nn.Linear`` to it.
    """

    def __init__(
        self, base_layer: nn.Linear, adapter_name: str, config: LoraConfig, r: int, lora_alpha: float, **kwargs
    ) -> None:
        # kwargs are PEFT's bookkeeping for its own layers (target_name, device_map, loaded_in_8bit, ...).
        super().__init__()
        LoraLayer.__init__(self, base_layer)
        self._merged_factors: dict[str, torch.Tensor] = {}  # DoRA: m / ||W0 + dW|| of each merged adapter
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config)

    def update_layer(self, adapter_name: str, r: int, lora_alpha: float, config: LoraConfig, **kwargs) -> None:
        """Add adapter `adapter_name`: A Kaiming-uniform (a=sqrt(5)), B zero, scaling alpha / r (alpha / sqrt(r)
        with ``config.use_rslora``).

        With ``config.init_lora_weights=False`` both keep nn.Linear's default random init, as in PEFT. PEFT calls
        this directly, with ``target_name`` in kwargs, to add a second adapter to a layer.
        """
        validate_lora_settings(r, lora_alpha, config.lora_dropout)
        _check_supported(config)
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.scaling[adapter_name] = lora_alpha / (math.sqrt(r) if config.use_rslora else r)
        # Identity when off: the LoRA path then reads x itself, no copy.
        self.lora_dropout[adapter_name] = nn.Dropout(config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()
        # nn.Linear serves only to hold the weight under PEFT's key (lora_A.<name>.weight). Its constructor draws
        # a default init for A, then for B, and A is drawn again below: the random numbers PEFT consumes, in
        # PEFT's order, so the same seed gives both implementations the same weights.
        self.lora_A[adapter_name] = nn.Linear(self.in_features, r, bias=False)
        self.lora_B[adapter_name] = nn.Linear(r, self.out_features, bias=False)
        if config.init_lora_weights:
            nn.init.kaiming_uniform_(self.lora_A[adapter_name].weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B[adapter_name].weight)
        self.use_dora[adapter_name] = bool(config.use_dora)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        if config.use_dora:  # after the move, as in PEFT: the norms are taken where A and B now live
            self._add_magnitude(adapter_name)
        # As in PEFT's layers: only the active adapters train, and none if the config is for inference.
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def _add_magnitude(self, adapter: str) -> None:
        """DoRA: m starts at the row norms of W0 + (alpha / r) B A (of W0 itself when B starts at zero), so the
        adapted layer starts out computing what the base layer does."""
        base_layer = self.get_base_layer()
        # DeepSpeed ZeRO-3 keeps only a shard of the frozen weight on each rank; gather it for the norms.
        with gather_params_ctx(base_layer.parameters()), torch.no_grad():
            weight = dequantize_module_weight(base_layer).to(self.lora_A[adapter].weight.device)
            norm = self._row_norm(weight, self.get_delta_weight(adapter).to(weight.dtype))
        self.lora_magnitude_vector[adapter] = DoraMagnitude(norm)

    @staticmethod
    def _row_norm(weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """||W + dW|| of each output row, in the weight's dtype."""
        return torch.linalg.norm(weight + delta, dim=1).to(weight.dtype)

    def _dora_factor(self, adapter: str, weight: torch.Tensor) -> torch.Tensor:
        """m / ||W + dW||_row as a column (out x 1), for merging `adapter` into `weight` (W0 as PEFT's layer
        takes it: with no adapter merged into it)."""
        norm = self._row_norm(weight, self.get_delta_weight(adapter).to(weight.dtype))
        return (self.lora_magnitude_vector[adapter].weight / norm).view(-1, 1)

    def _unmerged_weight(self) -> torch.Tensor:
        """A copy of W0 with every merged adapter taken out again, newest first, as `unmerge` would."""
        weight = self._stored_weight().clone()
        for name in reversed(self.merged_adapters):
            weight = self._take_out(name, weight)
        return weight

    def _take_out(self, adapter: str, weight: torch.Tensor) -> torch.Tensor:
        delta = self.get_delta_weight(adapter).to(weight.dtype)
        if self.use_dora.get(adapter):
            return weight / self._merged_factors[adapter] - delta
        return weight - delta

    def _dora_forward(self, name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """What DoRA adds to `result` (W0 x + b, plus any adapter before this one): (m / ||W0 + dW|| - 1) W0 x
        + m / ||W0 + dW|| (alpha / r) B A dropout(x), in PEFT's order of operations.

        With dropout on, W0 is applied once more to the dropped x (the correction then sees the same input as
        the LoRA path), as PEFT's layer does; in eval, or without dropout, `result` is reused.
        """
        lora_A, lora_B, dropout = self.lora_A[name], self.lora_B[name], self.lora_dropout[name]
        scaling = self.scaling[name]
        base_layer = self.get_base_layer()
        # B A through the layers' own forward, not as B.weight @ A.weight: FSDP and ZeRO-3 gather sharded weights
        # for a module's forward only.
        lora_weight = lora_B(lora_A(torch.eye(self.in_features, device=x.device, dtype=x.dtype))).T
        if isinstance(dropout, nn.Identity) or not self.training:
            base_result = result if base_layer.bias is None else result - base_layer.bias
        else:
            x = dropout(x)
            base_result = None
        # W0 is read outside its layer's forward: under ZeRO-3 it is gathered for the norm (a no-op otherwise).
        with gather_params_ctx(base_layer.weight, modifier_rank=None):
            weight = dequantize_module_weight(base_layer).to(x.dtype)
        # The paper's section 4.3: the norm is a constant in backward, so no gradient flows through it.
        norm = self._row_norm(weight, scaling * lora_weight.detach()).detach()
        factor = self.lora_magnitude_vector[name](norm).view(1, -1)
        if base_result is None:
            base_result = F.linear(x, weight)
        return (factor - 1) * base_result + factor * lora_B(lora_A(x)) * scaling

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """Return (alpha / r) B A for `adapter`: the change LoRA makes to W0, shaped like W0 (out x in)."""
        return (self.lora_B[adapter].weight @ self.lora_A[adapter].weight) * self.scaling[adapter]

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Add (alpha / r) B A of `adapter_names` (default: the active adapters) into W0.

        Adapters already merged are skipped with PEFT's warning, so merging twice changes nothing. With
        `safe_merge`, W0 is left untouched and ValueError raised if the merged weight would not be finite.
        """
        for name in check_adapters_to_merge(self, adapter_names):
            if name not in self.lora_A:
                continue
            weight = self._stored_weight()
            delta = self.get_delta_weight(name).to(weight.dtype)
            factor = None
            if self.use_dora.get(name):
                # The norm is W0's, as in forward; kept, since the merged weight no longer tells it.
                factor = self._dora_factor(name, self._unmerged_weight()).detach()
            merged = weight + delta if factor is None else (factor * (weight + delta)).to(weight.dtype)
            if safe_merge and not torch.isfinite(merged).all():
                raise ValueError(f"NaNs detected in the merged weights. The adapter {name} seems to be broken")
            if factor is not None:
                self._merged_factors[name] = factor
            self._store_weight(merged)
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Subtract every merged adapter's (alpha / r) B A from W0, restoring W0 up to rounding."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.")
            return
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            self._store_weight(self._take_out(name, self._stored_weight()))
            self._merged_factors.pop(name, None)

    def _stored_weight(self) -> torch.Tensor:
        """W0 as the base layer holds it now, as a float tensor: dequantised from a bitsandbytes 4-bit or 8-bit
        layer (QLoRA), the weight itself (detached, sharing its storage) otherwise."""
        return dequantize_module_weight(self.get_base_layer()).detach()

    def _store_weight(self, data: torch.Tensor) -> None:
        """Write `data` into W0: in place for a plain weight; re-quantised into a new parameter for a bitsandbytes
        layer, as PEFT's own 4-bit and 8-bit LoRA layers merge, so both give the same quantised weight."""
        base_layer = self.get_base_layer()
        weight = base_layer.weight
        kind = type(weight).__name__
        if kind not in ("Params4bit", "Int8Params"):
            weight.data.copy_(data)
            return
        import bitsandbytes as bnb

        bits = 4 if kind == "Params4bit" else 8
        # PEFT's bnb layers warn alike. infer.py and export.py merge into the dequantised weights instead.
        warnings.warn(f"Merging LoRA into a {bits}-bit layer rounds the merged weight to {bits} bits, so the merged "
                      "model's outputs differ slightly from the adapter's")
        if kind == "Params4bit":
            # Params4bit's own attributes (blocksize, quant_type, quant_state, ...) carry over; quantised afresh
            # by .to(device). Private attributes (torch.compile's) are dropped, as PEFT drops them.
            kwargs = {k: v for k, v in weight.__dict__.items() if not k.startswith("_") and k != "data"}
            kwargs["requires_grad"] = False
            if "bnb_quantized" in kwargs:
                kwargs["bnb_quantized"] = False
            base_layer.weight = bnb.nn.Params4bit(data.to("cpu"), **kwargs).to(weight.device)
        else:
            base_layer.weight = bnb.nn.Int8Params(
                data.to("cpu"), requires_grad=False, has_fp16_weights=weight.has_fp16_weights).to(weight.device)
            base_layer.state.reset_grads()  # the scales of the old int8 weight; the new one brings its own

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return W0 x + b plus (alpha / r) B A dropout(x) for each active, unmerged adapter of this layer (a DoRA
        adapter rescales the sum so far, see `_dora_forward`)."""
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x)
        result = self.base_layer(x)
        if self.merged:
            return result
        result_dtype = result.dtype
        for name in self.active_adapters:
            # An adapter may skip this layer (e.g. layers_to_transform).
            if name not in self.lora_A:
                continue
            # PEFT may keep the adapter in fp32 under a bf16/fp16 base model; compute it in its own dtype. The
            # weights are used only inside lora_A's and lora_B's own forward: under FSDP and DeepSpeed ZeRO-3 a
            # module's weights are gathered for its forward, and outside it are shards.
            x_lora = x.to(self.lora_A[name].weight.dtype)
            if self.use_dora.get(name):
                result = result + self._dora_forward(name, x_lora, result)
                continue
            result = result + self.lora_B[name](self.lora_A[name](self.lora_dropout[name](x_lora))) * self.scaling[name]
        return result.to(result_dtype)


def register(config: LoraConfig) -> LoraConfig:
    """Make PEFT build LoraLinear for every ``nn.Linear`` that `config` targets, and return `config`.

    PEFT does not save this choice in adapter_config.json: call it again on the loaded config wherever an adapter
    is loaded with this implementation, or use `load_adapter`. Raises ValueError for options LoraLinear lacks.
    """
    _check_supported(config)
    config._register_custom_module({nn.Linear: LoraLinear})
    return config


def load_adapter(base_model: nn.Module, path_or_repo: str, impl: str = "peft", **kwargs) -> PeftModel:
    """Return `base_model` with the adapter saved at `path_or_repo`, run by PEFT's layer or by LoraLinear.

    `impl` is "peft" or "scratch"; both read the same files. kwargs go to ``PeftModel.from_pretrained``
    (is_trainable, adapter_name, subfolder, revision, ...).
    """
    if impl == "peft":
        return PeftModel.from_pretrained(base_model, path_or_repo, **kwargs)
    if impl == "scratch":
        config = register(LoraConfig.from_pretrained(path_or_repo, **kwargs))
        return PeftModel.from_pretrained(base_model, path_or_repo, config=config, **kwargs)
    raise ValueError(f"impl should be 'peft' or 'scratch' but the value passed is {impl!r}")
