"""The scratch LoRA layer (lorakit/adapters/lora.py): its maths, and that it is interchangeable with PEFT's own layer."""

import copy
import json
import re
import runpy
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from peft.tuners.lora.layer import LoraLayer
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForSequenceClassification, BertConfig, RobertaConfig

from lorakit import adapters
from lorakit.adapters import LoraLinear

REPO = Path(__file__).resolve().parents[1]
TINY = dict(
    vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64, num_labels=3,
)
ARCHS = {"roberta": RobertaConfig, "bert": BertConfig}
TOL = 1e-6  # fp32; the two implementations run the same kernels, so differences are rounding at most


def tiny_model(arch: str = "roberta") -> nn.Module:
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(ARCHS[arch](**TINY))


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # ids from 2 up: 0 and 1 are RoBERTa's <s> and <pad>
    return {
        "input_ids": torch.randint(2, TINY["vocab_size"], (4, 16), generator=generator),
        "labels": torch.randint(0, TINY["num_labels"], (4,), generator=generator),
    }


def lora_config(**overrides) -> LoraConfig:
    settings = dict(task_type="SEQ_CLS", target_modules=["query", "value"], r=4, lora_alpha=8, lora_dropout=0.0)
    return LoraConfig(**(settings | overrides))


def adapt(base: nn.Module, impl: str, **overrides) -> nn.Module:
    """Return a copy of `base` with LoRA from `impl` ("peft" or "scratch"); the same seed for both impls."""
    config = lora_config(**overrides)
    if impl == "scratch":
        adapters.register(config)
    torch.manual_seed(1)
    return get_peft_model(copy.deepcopy(base), config)


def perturb(model: nn.Module) -> nn.Module:
    """Set every lora_B and the classifier head to the same random values in any model of the same shape, and
    DoRA's magnitudes to their initial values times 1 +- 0.1.

    B starts at zero and the magnitudes at the norms that cancel them, which would make most comparisons trivial;
    the head is set so that loading must restore it.
    """
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
            elif "lora_magnitude_vector" in name:
                param.mul_(1 + 0.1 * torch.randn(param.shape, generator=generator))
    return model


def logits(model: nn.Module, seed: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch(seed)["input_ids"]).logits


def lora_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_layer_computes_the_lora_formula():
    torch.manual_seed(0)
    base_layer = nn.Linear(6, 5)
    x = torch.randn(3, 6)
    layer = LoraLinear(base_layer, "default", config=lora_config(r=2, lora_alpha=3), r=2, lora_alpha=3)
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert A.shape == (2, 6) and B.shape == (5, 2) and not B.any() and layer.scaling["default"] == 1.5
    assert A.requires_grad and B.requires_grad
    assert torch.equal(layer(x), base_layer(x))

    with torch.no_grad():
        B.normal_()
    expected = x @ base_layer.weight.T + base_layer.bias + (3 / 2) * (x @ A.T @ B.T)
    assert max_diff(layer(x), expected) <= TOL
    assert max_diff(layer.get_delta_weight("default"), (3 / 2) * B @ A) <= TOL


@pytest.mark.parametrize("init_lora_weights", [True, False])
def test_layer_draws_the_same_weights_as_peft_layer(init_lora_weights):
    config = lora_config(r=2, init_lora_weights=init_lora_weights)
    layers = []
    for layer_class in (PeftLoraLinear, LoraLinear):
        torch.manual_seed(0)
        layers.append(layer_class(nn.Linear(6, 5), "default", config=config, r=2, lora_alpha=8))
    assert layers[0].state_dict().keys() == layers[1].state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(layers[0].state_dict().values(), layers[1].state_dict().values()))


def test_layer_built_for_inference_is_frozen():
    config = lora_config(inference_mode=True)
    layer = LoraLinear(nn.Linear(6, 5), "default", config=config, r=4, lora_alpha=8)
    assert not any(p.requires_grad for name, p in layer.named_parameters() if "lora_" in name)


@pytest.mark.parametrize("arch", ARCHS)
def test_adapted_model_starts_equal_to_base(arch):
    base = tiny_model(arch).eval()
    model = adapt(base, "scratch", lora_dropout=0.1).eval()
    layers = lora_modules(model)
    assert len(layers) == 2 * TINY["num_hidden_layers"]
    assert all(type(layer) is LoraLinear for layer in layers.values())
    assert torch.equal(logits(model), logits(base))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("r", [1, 64])
def test_same_weights_outputs_and_gradients_as_peft(arch, dropout, r):
    base = tiny_model(arch)
    peft_model = adapt(base, "peft", r=r, lora_alpha=2 * r, lora_dropout=dropout)
    scratch = adapt(base, "scratch", r=r, lora_alpha=2 * r, lora_dropout=dropout)
    assert all(type(layer) is PeftLoraLinear for layer in lora_modules(peft_model).values())
    assert all(type(layer) is LoraLinear for layer in lora_modules(scratch).values())
    # same seed, same random draws in the same order: bit-identical initial weights under the same keys
    peft_state, scratch_state = peft_model.state_dict(), scratch.state_dict()
    assert peft_state.keys() == scratch_state.keys()
    assert all(torch.equal(peft_state[key], scratch_state[key]) for key in peft_state)

    grads = {}
    for impl, model in (("peft", perturb(peft_model)), ("scratch", perturb(scratch))):
        model.eval()
        output = model(**batch())
        output.loss.backward()
        grads[impl] = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
        grads[impl]["logits"] = output.logits.detach()
    assert grads["peft"].keys() == grads["scratch"].keys()
    for name in grads["peft"]:
        assert max_diff(grads["peft"][name], grads["scratch"][name]) <= TOL, name
    assert any("lora_A" in name and grad.abs().max() > 0 for name, grad in grads["scratch"].items())


def test_same_dropout_masks_as_peft_in_training_mode():
    base = tiny_model()
    outputs = []
    for impl in ("peft", "scratch"):
        model = perturb(adapt(base, impl, lora_dropout=0.5)).train()
        torch.manual_seed(3)  # both draw their dropout masks in the same order from here
        outputs.append(logits(model))
    assert max_diff(*outputs) <= TOL


def test_merge_unmerge():
    model = perturb(adapt(tiny_model(), "scratch", r=4, lora_alpha=8)).eval()
    layers = lora_modules(model)
    base_weights = {name: layer.base_layer.weight.detach().clone() for name, layer in layers.items()}
    unmerged_logits = logits(model)

    model.merge_adapter()
    for name, layer in layers.items():
        assert layer.merged
        B, A = layer.lora_B["default"].weight, layer.lora_A["default"].weight
        expected = base_weights[name] + (8 / 4) * (B @ A)
        assert max_diff(layer.base_layer.weight, expected) <= 1e-7, name
    merged_weights = {name: layer.base_layer.weight.detach().clone() for name, layer in layers.items()}
    assert max_diff(logits(model), unmerged_logits) <= TOL

    with pytest.warns(UserWarning, match="All adapters are already merged, nothing to do"):
        model.merge_adapter()
    assert all(torch.equal(layer.base_layer.weight, merged_weights[name]) for name, layer in layers.items())

    model.unmerge_adapter()
    for name, layer in layers.items():
        assert not layer.merged
        assert max_diff(layer.base_layer.weight, base_weights[name]) <= TOL, name
    assert max_diff(logits(model), unmerged_logits) <= TOL


def test_dora_layer_computes_the_dora_formula():
    torch.manual_seed(0)
    base_layer = nn.Linear(6, 5)
    x = torch.randn(3, 6)
    config = lora_config(r=2, lora_alpha=3, use_dora=True)
    layer = LoraLinear(base_layer, "default", config=config, r=2, lora_alpha=3)
    W0, b = base_layer.weight, base_layer.bias
    m = layer.lora_magnitude_vector["default"].weight
    assert m.requires_grad and max_diff(m, W0.norm(dim=1)) <= TOL
    assert max_diff(layer(x), base_layer(x)) <= TOL

    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    with torch.no_grad():
        B.normal_()
        m.mul_(torch.tensor([0.5, 1.0, 1.5, 2.0, 3.0]))
    out = layer(x)
    V = W0 + 1.5 * B @ A
    norm = V.norm(dim=1, keepdim=True)
    assert max_diff(out, x @ (m[:, None] * V / norm).T + b) <= 1e-5
    # The norm is a constant in backward (the paper's section 4.3): B's gradient is that of the formula with the
    # norm detached, and differs from the one with the norm differentiated.
    out.sum().backward()
    B_detached = B.detach().clone().requires_grad_()
    V = W0 + 1.5 * B_detached @ A.detach()
    (x @ (m.detach()[:, None] * V / V.norm(dim=1, keepdim=True).detach()).T).sum().backward()
    assert max_diff(B.grad, B_detached.grad) <= 1e-5
    B_full = B.detach().clone().requires_grad_()
    V = W0 + 1.5 * B_full @ A.detach()
    (x @ (m.detach()[:, None] * V / V.norm(dim=1, keepdim=True)).T).sum().backward()
    assert max_diff(B.grad, B_full.grad) > 1e-3


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_dora_same_weights_outputs_and_gradients_as_peft_in_training(arch, dropout):
    base = tiny_model(arch)
    grads = {}
    for impl in ("peft", "scratch"):
        model = adapt(base, impl, use_dora=True, lora_dropout=dropout)
        assert len(lora_modules(model)) == 2 * TINY["num_hidden_layers"]
        grads[impl] = {"init": {k: v.clone() for k, v in model.state_dict().items()}}
        model = perturb(model).train()
        torch.manual_seed(3)  # the same dropout masks, in the same order
        output = model(**batch())
        output.loss.backward()
        grads[impl].update({name: p.grad for name, p in model.named_parameters() if p.requires_grad})
        grads[impl]["logits"] = output.logits.detach()
    peft_init, scratch_init = grads["peft"].pop("init"), grads["scratch"].pop("init")
    assert peft_init.keys() == scratch_init.keys()
    assert all(torch.equal(peft_init[key], scratch_init[key]) for key in peft_init)
    assert grads["peft"].keys() == grads["scratch"].keys()
    for name in grads["peft"]:
        assert max_diff(grads["peft"][name], grads["scratch"][name]) <= TOL, name
    magnitudes = [g for name, g in grads["scratch"].items() if "lora_magnitude_vector" in name]
    assert len(magnitudes) == 2 * TINY["num_hidden_layers"] and all(g.abs().max() > 0 for g in magnitudes)


def test_dora_merge_unmerge():
    model = perturb(adapt(tiny_model(), "scratch", r=4, lora_alpha=8, use_dora=True)).eval()
    layers = lora_modules(model)
    base_weights = {name: layer.base_layer.weight.detach().clone() for name, layer in layers.items()}
    unmerged_logits = logits(model)

    model.merge_adapter()
    for name, layer in layers.items():
        B, A = layer.lora_B["default"].weight, layer.lora_A["default"].weight
        m = layer.lora_magnitude_vector["default"].weight
        V = base_weights[name] + (8 / 4) * (B @ A)
        assert max_diff(layer.base_layer.weight, m[:, None] * V / V.norm(dim=1, keepdim=True)) <= 1e-6, name
    merged_weights = {name: layer.base_layer.weight.detach().clone() for name, layer in layers.items()}
    assert max_diff(logits(model), unmerged_logits) <= 1e-5

    with pytest.warns(UserWarning, match="All adapters are already merged, nothing to do"):
        model.merge_adapter()
    assert all(torch.equal(layer.base_layer.weight, merged_weights[name]) for name, layer in layers.items())

    model.unmerge_adapter()
    for name, layer in layers.items():
        assert max_diff(layer.base_layer.weight, base_weights[name]) <= 1e-6, name
    assert max_diff(logits(model), unmerged_logits) <= 1e-5


def test_dora_merged_after_a_plain_adapter_as_peft_merges_it():
    base = tiny_model()
    weights = {}
    for impl in ("peft", "scratch"):
        model = adapt(base, impl)
        dora = lora_config(r=2, lora_alpha=4, use_dora=True)
        if impl == "scratch":
            adapters.register(dora)
        torch.manual_seed(4)
        model.add_adapter("dora", dora)
        perturb(model).eval()
        layer = model.base_model.model.roberta.encoder.layer[0].attention.self.query
        layer.merge(adapter_names=["default", "dora"])
        weights[impl] = layer.base_layer.weight.detach().clone()
        layer.unmerge()
        weights[impl + " unmerged"] = layer.base_layer.weight.detach().clone()
    assert max_diff(weights["peft"], weights["scratch"]) <= 1e-6
    assert max_diff(weights["peft unmerged"], weights["scratch unmerged"]) <= 1e-6


def test_disabled_adapter_gives_base_outputs_even_when_merged():
    base = tiny_model().eval()
    model = perturb(adapt(base, "scratch")).eval()
    with model.disable_adapter():
        assert torch.equal(logits(model), logits(base))
    model.merge_adapter()
    with model.disable_adapter():
        assert max_diff(logits(model), logits(base)) <= TOL


@pytest.mark.parametrize("use_dora", [False, True])
def test_merge_and_unload_gives_the_same_logits_as_peft(use_dora):
    base = tiny_model().eval()
    results = {}
    for impl in ("peft", "scratch"):
        model = perturb(adapt(base, impl, use_dora=use_dora)).eval()
        before = logits(model)
        merged = model.merge_and_unload()
        assert not lora_modules(merged)
        assert type(merged.roberta.encoder.layer[0].attention.self.query) is nn.Linear
        results[impl] = logits(merged)
        assert max_diff(results[impl], before) <= TOL
    assert max_diff(results["peft"], results["scratch"]) <= TOL


def test_training_step_changes_only_lora_and_head():
    model = adapt(tiny_model(), "scratch", lora_dropout=0.1).train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name in before if "lora_" in name or "classifier.modules_to_save" in name}
    assert any("lora_A" in name for name in trainable) and any("classifier" in name for name in trainable)

    # No weight decay, so a weight moves only if its gradient moved it; the second step is the first in which A
    # gets a gradient (it is zero while B is zero).
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for _ in range(2):
        model(**batch()).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == trainable  # every frozen weight is bit-identical


@pytest.mark.parametrize("use_dora", [False, True])
@pytest.mark.parametrize("saved_by, loaded_by", [("scratch", "peft"), ("peft", "scratch")])
def test_adapter_saved_by_one_implementation_loads_in_the_other(tmp_path, saved_by, loaded_by, use_dora):
    base = tiny_model().eval()
    model = perturb(adapt(base, saved_by, use_dora=use_dora)).eval()
    model.save_pretrained(tmp_path)

    # impl="peft" is a plain PeftModel.from_pretrained: no registration
    loaded = adapters.load_adapter(copy.deepcopy(base), tmp_path, impl=loaded_by).eval()
    expected_class = LoraLinear if loaded_by == "scratch" else PeftLoraLinear
    assert all(type(layer) is expected_class for layer in lora_modules(loaded).values())
    assert len(lora_modules(loaded)) == len(lora_modules(model))
    assert max_diff(logits(loaded), logits(model)) <= TOL
    assert all(not p.requires_grad for p in loaded.parameters())


@pytest.mark.parametrize("use_dora", [False, True])
def test_saved_files_are_identical(tmp_path, use_dora):
    base = tiny_model()
    for impl in ("peft", "scratch"):
        perturb(adapt(base, impl, use_dora=use_dora)).save_pretrained(tmp_path / impl)
    peft_tensors = load_file(tmp_path / "peft" / "adapter_model.safetensors")
    scratch_tensors = load_file(tmp_path / "scratch" / "adapter_model.safetensors")
    assert peft_tensors.keys() == scratch_tensors.keys()
    assert any(".lora_A.weight" in key for key in scratch_tensors)
    assert any(key.endswith(".lora_magnitude_vector") for key in scratch_tensors) == use_dora
    assert all(torch.equal(peft_tensors[key], scratch_tensors[key]) for key in peft_tensors)
    configs = [json.loads((tmp_path / impl / "adapter_config.json").read_text()) for impl in ("peft", "scratch")]
    assert configs[0] == configs[1]


def test_load_adapter_scratch_is_trainable_on_request(tmp_path):
    base = tiny_model()
    adapt(base, "peft").save_pretrained(tmp_path)
    loaded = adapters.load_adapter(copy.deepcopy(base), tmp_path, impl="scratch", is_trainable=True)
    trainable = {name for name, p in loaded.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or "modules_to_save" in name for name in trainable)


@pytest.mark.parametrize("arch", ARCHS)
def test_layers_to_transform_adapts_only_the_chosen_layer(arch):
    base = tiny_model(arch)
    scratch = adapt(base, "scratch", layers_to_transform=[1])
    prefix = f"base_model.model.{arch}.encoder.layer.1.attention.self."
    assert set(lora_modules(scratch)) == {prefix + "query", prefix + "value"}
    assert all(type(layer) is LoraLinear for layer in lora_modules(scratch).values())
    peft_model = perturb(adapt(base, "peft", layers_to_transform=[1])).eval()
    assert max_diff(logits(perturb(scratch).eval()), logits(peft_model)) <= TOL


def test_second_adapter_goes_through_update_layer():
    base = tiny_model()
    results = {}
    for impl in ("peft", "scratch"):
        model = adapt(base, impl)
        second = lora_config(r=2, lora_alpha=4)
        if impl == "scratch":
            adapters.register(second)
        torch.manual_seed(4)
        model.add_adapter("second", second)
        model.set_adapter("second")
        layer = model.base_model.model.roberta.encoder.layer[0].attention.self.query
        assert set(layer.lora_A) == {"default", "second"} and layer.scaling["second"] == 2.0
        results[impl] = logits(perturb(model).eval())
    assert max_diff(results["peft"], results["scratch"]) <= TOL


@pytest.mark.parametrize(
    "r, alpha, dropout, bad",
    [
        (0, 8, 0.1, "lora_r"),
        (-4, 8, 0.1, "lora_r"),
        (2.5, 8, 0.1, "lora_r"),
        (8, 0, 0.1, "lora_alpha"),
        (8, -16, 0.1, "lora_alpha"),
        (8, float("nan"), 0.1, "lora_alpha"),
        (8, 16, -0.1, "lora_dropout"),
        (8, 16, 1.0, "lora_dropout"),
        (8, 16, 1.5, "lora_dropout"),
    ],
)
def test_bad_settings_are_named(r, alpha, dropout, bad):
    value = {"lora_r": r, "lora_alpha": alpha, "lora_dropout": dropout}[bad]
    message = rf"^{bad} should be .* the value passed is {re.escape(repr(value))}; set --{bad} "
    with pytest.raises(ValueError, match=message):
        adapters.validate_lora_settings(r, alpha, dropout)


def test_every_bad_setting_is_named_at_once():
    with pytest.raises(ValueError) as error:
        adapters.validate_lora_settings(0, 0, 1)
    assert all(name in str(error.value) for name in ("lora_r", "lora_alpha", "lora_dropout"))


def test_good_settings_pass_and_the_bounds_are_where_they_say():
    assert adapters.validate_lora_settings(1, 0.5, 0) is None
    assert adapters.validate_lora_settings(64, 128, 0.99) is None
    for r, alpha, dropout, bad in ((0, 0.5, 0, "lora_r"), (1, 0.0, 0, "lora_alpha"), (1, 0.5, 1.0, "lora_dropout")):
        with pytest.raises(ValueError, match=f"^{bad} should be"):
            adapters.validate_lora_settings(r, alpha, dropout)


def test_bad_rank_fails_when_the_layer_is_built():
    with pytest.raises(ValueError, match="lora_r should be a positive integer but the value passed is 0"):
        adapt(tiny_model(), "scratch", r=0)


@pytest.mark.parametrize(
    "option", [{"lora_bias": True}, {"init_lora_weights": "gaussian"}, {"use_qalora": True}]
)
def test_unsupported_options_are_refused(option):
    (name, value), = option.items()
    with pytest.raises(ValueError, match=re.escape(f"{name}={value!r}")):
        adapters.register(lora_config(**option))


def test_rslora_scales_by_alpha_over_sqrt_r_as_peft_does():
    base = tiny_model()
    peft_model = perturb(adapt(base, "peft", use_rslora=True)).eval()
    scratch = perturb(adapt(base, "scratch", use_rslora=True)).eval()
    layer = next(m for m in scratch.modules() if isinstance(m, LoraLinear))
    assert layer.scaling["default"] == 8 / 2  # alpha 8, r 4: 8 / sqrt(4)
    assert max_diff(logits(peft_model), logits(scratch)) < TOL
    assert not torch.allclose(logits(scratch), logits(perturb(adapt(base, "scratch")).eval()), atol=1e-3)


def _shard_outside_forward(module: nn.Module) -> None:
    """Make `module.weight` what FSDP and ZeRO-3 leave a rank outside the module's forward: an empty shard of the
    same dtype. The full weight is there only between the module's forward pre-hook and its forward hook."""
    full = module.weight
    shard = nn.Parameter(torch.empty(0, dtype=full.dtype), requires_grad=full.requires_grad)

    def gather(mod, args):
        mod.weight = full

    def release(mod, args, output):
        mod.weight = shard

    module.register_forward_pre_hook(gather)
    module.register_forward_hook(release)
    module.weight = shard


@pytest.mark.parametrize("dora", [False, True])
def test_adapter_weights_are_read_only_inside_their_modules_forward(dora):
    # Under FSDP / ZeRO-3 a weight read outside its module's forward is a shard; with the shards simulated, the
    # layer must still compute exactly what it computes unsharded, in forward and backward.
    base = tiny_model()
    reference = perturb(adapt(base, "scratch", use_dora=dora, lora_dropout=0.1))
    sharded = perturb(adapt(base, "scratch", use_dora=dora, lora_dropout=0.1))
    for layer in [m for m in sharded.modules() if isinstance(m, LoraLinear)]:
        for module in [*layer.lora_A.values(), *layer.lora_B.values(), *layer.lora_magnitude_vector.values()]:
            _shard_outside_forward(module)
    for model in (reference, sharded):
        model.train()
        torch.manual_seed(3)
        model(**batch()).loss.backward()
    assert max_diff(logits(reference.eval()), logits(sharded.eval())) < TOL
    grads = {n: p.grad for n, p in reference.named_parameters() if "lora_B" in n}
    assert grads and all(p.grad is not None and torch.allclose(p.grad, grads[n], atol=1e-6)
                         for n, p in sharded.named_parameters() if "lora_B" in n and p.numel())


def test_load_adapter_refuses_unknown_impl(tmp_path):
    with pytest.raises(ValueError, match="impl should be 'peft' or 'scratch' but the value passed is 'lora'"):
        adapters.load_adapter(tiny_model(), tmp_path, impl="lora")


@pytest.mark.parametrize("extra", [[], ["--dora"]])
def test_benchmark_script_runs(capsys, extra):
    main = runpy.run_path(str(REPO / "bench" / "lora_impl.py"))["main"]
    result = main(["--tiny", "--steps", "2", "--warmup", "1", *extra])
    assert set(result) == {"peft", "scratch", "ratio"} and result["ratio"] > 0
    out = capsys.readouterr().out
    assert "ratio scratch/peft:" in out and ("DoRA r=8" in out) == bool(extra)
