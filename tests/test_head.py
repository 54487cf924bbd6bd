"""What trains beside the LoRA matrices: the classification head, which for BERT includes its pooler (RoBERTa's
head holds the same dense + tanh layer inside `classifier`), overridable with `lora_modules_to_save`."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import GLUE, QUICK, run_script
from lorakit import modeling, sweep
from lorakit.errors import UsageError
from lorakit.recipe import parse_recipe

LABELS = ["not_equivalent", "equivalent"]


def _recipe(model, *extra: str):
    return parse_recipe(["--task", "mrpc", "--model_name_or_path", str(model), "--dataset_name", str(GLUE),
                         "--label_names", ",".join(LABELS), "--max_seq_length", "64", *extra]).recipe


def trained_modules(recipe) -> tuple[set[str], int]:
    """Names of the fully trained modules (not LoRA), and the trainable count `sweep` plans with."""
    config = modeling.load_config(recipe, LABELS)
    model = modeling.build_model(recipe, config, random_weights=True)
    names = {n.split(".modules_to_save.")[0].removeprefix("base_model.model.")
             for n, p in model.named_parameters() if p.requires_grad and ".lora_" not in n}
    assert sweep.count_params(recipe).trainable == modeling.param_report(model).trainable
    return names, modeling.param_report(model).trainable


@pytest.mark.parametrize("kind, expected", [("roberta", {"classifier"}), ("bert", {"bert.pooler", "classifier"})])
def test_each_architecture_trains_the_same_head(tiny_models, kind, expected):
    names, _ = trained_modules(_recipe(tiny_models[kind]))
    assert names == expected


def test_lora_modules_to_save_overrides_the_default(tiny_models):
    with_pooler, n_pooler = trained_modules(_recipe(tiny_models["bert"]))
    alone, n_alone = trained_modules(_recipe(tiny_models["bert"], "--lora_modules_to_save", "classifier"))
    assert alone == {"classifier"}
    assert n_pooler - n_alone == 32 * 32 + 32  # the tiny model's pooler: dense 32 x 32 with its bias
    empty, _ = trained_modules(_recipe(tiny_models["bert"], "--lora_modules_to_save", ""))
    assert empty == {"classifier"}
    names, _ = trained_modules(_recipe(tiny_models["roberta"], "--lora_modules_to_save", "dense"))
    assert {"classifier"} < names and all(n.endswith("dense") for n in names - {"classifier"})


def test_a_module_the_model_lacks_is_a_one_line_error(tiny_models, tmp_path):
    # RoBERTa's sequence classifier is built without a pooler.
    with pytest.raises(UsageError, match="lora_modules_to_save 'pooler' matches no module of roberta"):
        trained_modules(_recipe(tiny_models["roberta"], "--lora_modules_to_save", "pooler"))
    out = tmp_path / "run"
    proc = run_script("train.py", "--task", "mrpc", "--model_name_or_path", str(tiny_models["bert"]),
                      "--dataset_name", str(GLUE), *QUICK, "--lora_modules_to_save", "poolr", "--output_dir", str(out))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: lora_modules_to_save 'poolr' matches no module of bert; name a module the model has (e.g. pooler) "
        "or leave the key unset")
    assert not out.exists()


def test_the_pooler_trains_and_travels_in_the_adapter(tiny_models, tmp_path):
    out = tmp_path / "run"
    proc = run_script("train.py", "--task", "mrpc", "--model_name_or_path", str(tiny_models["bert"]),
                      "--dataset_name", str(GLUE), *QUICK, "--learning_rate", "1e-2", "--output_dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    base = load_file(str(tiny_models["bert"] / "model.safetensors"))
    base_pooler = next(v for k, v in base.items() if k.endswith("pooler.dense.weight"))
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = [k for k in f.keys() if ".pooler." in k and k.endswith("dense.weight")]
        assert keys, "the adapter carries no pooler"
        assert not torch.equal(f.get_tensor(keys[0]), base_pooler)  # trained, not a copy of the frozen one


@pytest.mark.parametrize("method", ["lora", "full"])
def test_head_learning_rate_puts_the_head_in_groups_of_its_own(tiny_models, method):
    from lorakit.trainer import split_head_groups

    recipe = _recipe(tiny_models["bert"], "--method", method, "--head_learning_rate", "1e-4")
    config = modeling.load_config(recipe, LABELS)
    model = modeling.build_model(recipe, config)
    names = {id(p): n for n, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": 0.1},
         {"params": [p for p in trainable if p.ndim == 1], "weight_decay": 0.0}], lr=1e-3)
    moved = split_head_groups(optimizer, model, modeling.head_modules(recipe, config), recipe.head_learning_rate)
    assert moved == modeling.head_weights(recipe, config, model) == (32 * 32 + 32) + (32 * 2 + 2)
    by_lr = {}
    for group in optimizer.param_groups:
        by_lr.setdefault(group["lr"], set()).update(names[id(p)] for p in group["params"])
        assert group["params"], "an empty group left behind"
    head = by_lr[1e-4]
    assert all(f".{n}".startswith((".bert.pooler.", ".classifier.", ".base_model.model.bert.pooler.",
                                   ".base_model.model.classifier.")) for n in head)
    assert len(head) == 4  # the pooler's and the classifier's weight and bias
    assert not any(".lora_" in n for n in head)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)  # nothing lost or doubled
    # Weight decay follows each parameter into its new group.
    decays = {names[id(p)]: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert all(decays[n] == (0.1 if n.endswith("weight") else 0.0) for n in head)


def _train_pooler_and_lora_b(tiny_models, out, *extra: str):
    """Train mrpc on the tiny BERT with `extra` flags; returns (stderr, base pooler, trained pooler, LoRA B's)."""
    proc = run_script("train.py", "--task", "mrpc", "--model_name_or_path", str(tiny_models["bert"]),
                      "--dataset_name", str(GLUE), *QUICK, *extra, "--output_dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    base = load_file(str(tiny_models["bert"] / "model.safetensors"))
    base_pooler = next(v for k, v in base.items() if k.endswith("pooler.dense.weight"))
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        pooler = f.get_tensor(next(k for k in f.keys() if ".pooler." in k and k.endswith("dense.weight")))
        lora_b = [f.get_tensor(k) for k in f.keys() if "lora_B" in k]
    return proc.stderr, base_pooler, pooler, lora_b


def test_head_learning_rate_reaches_the_trainer(tiny_models, tmp_path):
    # With the head's rate at 1e-12 the pooler leaves training as it came, while the LoRA matrices (1e-2) move:
    # the groups are the ones Trainer steps and schedules, not a copy.
    stderr, base_pooler, pooler, lora_b = _train_pooler_and_lora_b(
        tiny_models, tmp_path / "run", "--learning_rate", "1e-2", "--head_learning_rate", "1e-12")
    assert "head (classifier, score, pooler): 1,122 trainable weights at learning rate 1e-12" in stderr
    torch.testing.assert_close(pooler, base_pooler, rtol=0, atol=1e-9)
    assert lora_b and all(t.abs().max() > 1e-4 for t in lora_b)


@pytest.mark.parametrize("value", ["0", "-1e-4"])
def test_head_learning_rate_must_be_positive(tiny_models, value):
    with pytest.raises(UsageError, match=f"head_learning_rate should be a positive number but the value passed is "):
        _recipe(tiny_models["bert"], "--head_learning_rate", value)


def test_head_learning_rate_without_a_head_is_a_one_line_error(tiny_models):
    recipe = _recipe(tiny_models["bert"], "--head_learning_rate", "1e-4")
    config = modeling.load_config(recipe, LABELS)
    model = modeling.build_model(recipe, config, random_weights=True)
    with pytest.raises(UsageError, match="no trainable parameter belongs to the head modules"):
        modeling.head_weights(recipe, config, torch.nn.Sequential(torch.nn.Linear(2, 2)))
    assert modeling.head_weights(recipe, config, model) == 32 * 32 + 32 + 32 * 2 + 2


def _adamw_like_trainer(model):
    """Two weight-decay groups as Trainer's create_optimizer makes them."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": [p for p in trainable if p.ndim > 1], "weight_decay": 0.1},
                              {"params": [p for p in trainable if p.ndim == 1], "weight_decay": 0.0}], lr=1e-3)


@pytest.mark.parametrize("impl", ["peft", "scratch"])
def test_loraplus_puts_lora_b_in_groups_at_ratio_times_their_rate(tiny_models, impl):
    from lorakit.trainer import split_head_groups, split_lora_b_groups

    recipe = _recipe(tiny_models["bert"], "--lora_impl", impl, "--head_learning_rate", "1e-4",
                     "--loraplus_lr_ratio", "16")
    config = modeling.load_config(recipe, LABELS)

    def grouped():
        torch.manual_seed(0)
        model = modeling.build_model(recipe, config)
        optimizer = _adamw_like_trainer(model)
        split_head_groups(optimizer, model, modeling.head_modules(recipe, config), recipe.head_learning_rate)
        moved = split_lora_b_groups(optimizer, model, recipe.loraplus_lr_ratio)
        return model, optimizer, moved

    model, optimizer, moved = grouped()
    names = {id(p): n for n, p in model.named_parameters()}
    lr_of = {names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}
    b = [n for n in lr_of if ".lora_B." in n]
    a = [n for n in lr_of if ".lora_A." in n]
    assert len(b) == len(a) == 2 * 2  # query and value in each of 2 layers
    assert moved == sum(p.numel() for n, p in model.named_parameters() if ".lora_B." in n) == 4 * 32 * 8
    assert all(lr_of[n] == pytest.approx(16e-3) for n in b) and all(lr_of[n] == 1e-3 for n in a)
    assert {lr_of[n] for n in lr_of if ".lora_" not in n} == {1e-4}  # the head keeps its own rate, not 16x it
    assert all(g["params"] for g in optimizer.param_groups)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(lr_of) == len(
        [p for p in model.parameters() if p.requires_grad])
    # A resumed run builds the groups again in the same order, so the checkpoint's optimizer state loads back.
    model(input_ids=torch.tensor([[2, 5, 7, 3]]), labels=torch.tensor([1])).loss.backward()
    optimizer.step()
    _, again, _ = grouped()
    again.load_state_dict(optimizer.state_dict())
    assert [g["lr"] for g in again.param_groups] == [g["lr"] for g in optimizer.param_groups]


def test_peft_loraplus_groups_differ(tiny_models):
    # Why KitTrainer keeps its own LoRA+ groups (lorakit/trainer.py): PEFT's create_loraplus_optimizer puts every
    # 1-D parameter (the head's biases) at the B matrices' rate and drops Trainer's weight decay on A and the head.
    from peft.optimizers import create_loraplus_optimizer

    recipe = _recipe(tiny_models["bert"], "--loraplus_lr_ratio", "16")
    model = modeling.build_model(recipe, modeling.load_config(recipe, LABELS))
    optimizer = create_loraplus_optimizer(model, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=16, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    lr_of = {names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}
    decay_of = {names[id(p)]: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    head_bias = next(n for n in lr_of if n.endswith("classifier.modules_to_save.default.bias"))
    assert lr_of[head_bias] == pytest.approx(16e-3)  # the kit keeps it at learning_rate
    assert decay_of[next(n for n in lr_of if ".lora_A." in n)] == 0.0  # the kit keeps Trainer's 0.1


def test_loraplus_reaches_the_trainer(tiny_models, tmp_path):
    # learning_rate 1e-12 freezes all but LoRA's B matrices, which LoRA+ at a ratio of 1e10 trains at 1e-2: B moves
    # off its zero start, the pooler stays as it came.
    from lorakit import hub

    out = tmp_path / "run"
    stderr, base_pooler, pooler, lora_b = _train_pooler_and_lora_b(
        tiny_models, out, "--learning_rate", "1e-12", "--loraplus_lr_ratio", "1e10")
    assert "LoRA+: LoRA's B matrices at 1e+10 x learning rate 1e-12 = 0.01" in stderr
    torch.testing.assert_close(pooler, base_pooler, rtol=0, atol=1e-9)
    assert lora_b and all(t.abs().max() > 1e-4 for t in lora_b)
    card = str(hub.build_card(hub.read_run(out), "me/tiny-mrpc", base_model="tiny"))
    assert "loraplus_lr_ratio=10000000000.0" in card  # the model card says how B was trained


@pytest.mark.parametrize("extra, message", [
    (["--loraplus_lr_ratio", "0"], "loraplus_lr_ratio should be a positive number but the value passed is 0.0"),
    (["--loraplus_lr_ratio", "16", "--method", "full"], "loraplus_lr_ratio applies to LoRA's B matrices but "
                                                         "method is full"),
])
def test_loraplus_bad_values_are_one_line_errors(tiny_models, extra, message):
    with pytest.raises(UsageError, match=message):
        _recipe(tiny_models["bert"], *extra)
