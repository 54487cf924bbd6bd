"""Decoder LLMs as classifiers (Llama, Qwen2, Mistral), their tokenizers without a pad token: train.py's run trains
LoRA on PEFT's default targets with the `score` head, batched and one-at-a-time inference agree, stock PEFT reloads
the adapter to the same logits, and the merged export predicts the same labels; the same on a 4-bit backbone
(QLoRA) with both LoRA implementations. Also: default targets for every architecture PEFT knows, all-linear, the
error for an architecture with no defaults, PEFT's init_lora_weights and rsLoRA options, activation checkpointing
with LoRA, and the shipped Qwen2.5-0.5B QLoRA recipe planned on a tiny Qwen2."""

from __future__ import annotations

import importlib.util
import json
import re
import typing

import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

from conftest import AG_NEWS, REPO, TINY
from lorakit import modeling, quantization, recipe as recipe_lib
from lorakit.errors import UsageError
from lorakit.inference import Classifier, export_merged
from lorakit.recipe import parse_recipe
from lorakit.runfolder import LOG_FILE

_spec = importlib.util.spec_from_file_location("train_script", REPO / "train.py")
train_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_script)
run = train_script.train

LABELS = ["World", "Sports", "Business", "Sci/Tech"]
TEXTS = ["Stocks fell.", "The team won the cup final after extra time on Sunday night in a packed stadium.",
         "New chip", "Rain.", "Talks between the two governments resumed in Geneva on Tuesday, officials said."]
# Two steps at batch 4 on AG News rows of mixed lengths (up to 128 tokens), nothing saved but the final run.
STEPS = ["--dataset_name", str(AG_NEWS), "--max_train_samples", "8", "--max_eval_samples", "8", "--max_steps", "2",
         "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--max_seq_length", "128",
         "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
         "--logging_steps", "1", "--learning_rate", "1e-2", "--lora_dropout", "0"]
QLORA = "agnews_qwen2.5_0.5b_qlora"


def _train(model_dir, out, *extra: str) -> dict:
    return run(parse_recipe(["--task", "agnews", "--model_name_or_path", str(model_dir), *STEPS,
                             "--output_dir", str(out), *extra]))


def _stock_peft_logits(model_dir, run_dir, bits: int | None) -> torch.Tensor:
    """Logits of a right-padded batch from stock transformers + PEFT: the base with the run's pad token id, the
    adapter loaded by PeftModel.from_pretrained (PEFT's own layer, whichever implementation trained it)."""
    tokenizer = AutoTokenizer.from_pretrained(str(run_dir))
    config = AutoConfig.from_pretrained(str(model_dir), num_labels=len(LABELS), pad_token_id=tokenizer.pad_token_id)
    kwargs = quantization.quantized_load_kwargs(bits, config) if bits else {}
    base = AutoModelForSequenceClassification.from_pretrained(str(model_dir), config=config, dtype=torch.float32,
                                                              **kwargs)
    if bits:
        base = quantization.prepare_quantized(base)
    model = PeftModel.from_pretrained(base, str(run_dir)).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert tokenizer.padding_side == "right" and (batch["attention_mask"] == 0).any()
    with torch.no_grad():
        return model(**batch).logits.float()


def _logits(clf: Classifier) -> torch.Tensor:
    return torch.tensor([[p.scores[label] for label in LABELS] for p in clf.predict(TEXTS)]).log()


def _check_run(model_dir, out, bits: int | None):
    steps = [row["step"] for row in json.loads((out / LOG_FILE).read_text()) if "loss" in row]
    assert steps == [1, 2]
    config = json.loads((out / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"q_proj", "v_proj"}
    assert "score" in config["modules_to_save"]
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert "base_model.model.score.weight" in keys
        assert any(f.get_tensor(k).abs().sum() > 0 for k in keys if ".lora_B." in k)  # trained away from zero
    assert AutoTokenizer.from_pretrained(str(out)).padding_side == "right"

    # Batched (padded, sorted by length) and one text at a time: the same probabilities.
    batched = Classifier.load(str(out), precision="fp32", batch_size=8)
    single = Classifier.load(str(out), precision="fp32", batch_size=1)
    assert batched.model.config.pad_token_id == batched.tokenizer.pad_token_id
    kit = _logits(batched)
    assert (kit - _logits(single)).abs().max() < 1e-4

    stock = torch.log_softmax(_stock_peft_logits(model_dir, out, bits), -1)
    # The 4-bit backbone computes in bf16 on this CPU; the kit merges into its dequantised fp32 weights.
    assert (stock - kit).abs().max() < (5e-2 if bits else 1e-4)
    assert stock.argmax(-1).tolist() == kit.argmax(-1).tolist()

    merged = export_merged(str(out), out.parent / "merged")
    saved = json.loads((merged / "config.json").read_text())
    assert saved["pad_token_id"] == batched.tokenizer.pad_token_id
    assert [p.label for p in Classifier.load(str(merged), precision="fp32").predict(TEXTS)] == \
        [p.label for p in batched.predict(TEXTS)]


@pytest.mark.parametrize("kind, impl", [("llama", "peft"), ("qwen2", "scratch"), ("mistral", "peft")])
def test_decoder_trains_infers_reloads_and_merges(tiny_decoders, tmp_path, kind, impl):
    _train(tiny_decoders[kind], tmp_path / "run", "--lora_impl", impl)
    _check_run(tiny_decoders[kind], tmp_path / "run", None)


@pytest.mark.parametrize("impl", ["peft", "scratch"])
def test_qlora_recipe_trains_infers_reloads_and_merges_on_tiny_qwen2(tiny_decoders, tmp_path, impl):
    # The shipped recipe itself, 4-bit and with activation checkpointing, on a tiny Qwen2.
    run(parse_recipe(["--task", QLORA, "--model_name_or_path", str(tiny_decoders["qwen2"]), *STEPS,
                      "--gradient_accumulation_steps", "1", "--lora_impl", impl, "--output_dir",
                      str(tmp_path / "run")]))
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["load_in_4bit"] is True
    _check_run(tiny_decoders["qwen2"], tmp_path / "run", 4)


# ---------------------------------------------------------------------------------------------------------------
# Target modules and the head for every architecture

def _tiny_config(model_type: str):
    """`model_type`'s default config, two layers deep (built on the meta device, so its width costs nothing)."""
    config = AutoConfig.for_model(model_type)
    for key in ("num_hidden_layers", "num_layers", "n_layer", "encoder_layers", "decoder_layers"):
        if hasattr(config, key):
            setattr(config, key, 2)
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:2]
    return config


PEFT_SEQ_CLS = [t for t in modeling.PEFT_TARGETS if t in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES]


@pytest.mark.parametrize("model_type", PEFT_SEQ_CLS)
def test_default_targets_exist_in_every_architecture_peft_knows(model_type):
    config = _tiny_config(model_type)
    recipe = recipe_lib.Recipe(model_name_or_path="unused", dataset_name="unused")
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    modeling.check_lora_targets(recipe, model, config)  # every default target matches a linear layer
    head = modeling.classifier_head(model)
    assert head and all(any(n == h or n.endswith("." + h) for n, _ in model.named_modules()) for h in head)
    assert not set(modeling.linear_layers(model)) & set(head)


def test_peft_mapping_covers_the_decoders_and_the_kit_table_only_adds():
    assert len(PEFT_SEQ_CLS) >= 25
    for kind in ("llama", "qwen2", "mistral"):
        assert modeling.PEFT_TARGETS[kind] == ["q_proj", "v_proj"]
    assert not set(modeling.DEFAULT_TARGETS) & set(modeling.PEFT_TARGETS)


@pytest.mark.parametrize("kind, head", [("llama", ["score"]), ("bert", ["classifier", "pooler"]),
                                        ("roberta", ["classifier"]), ("deberta-v2", ["pooler", "classifier"]),
                                        ("distilbert", ["pre_classifier", "classifier"]),
                                        ("bart", ["classification_head"])])
def test_the_head_is_found_in_the_model(kind, head):
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(_tiny_config(kind))
    assert modeling.classifier_head(model) == head


def _recipe(model_dir, *extra: str):
    return parse_recipe(["--task", "agnews", "--model_name_or_path", str(model_dir), "--dataset_name",
                         str(AG_NEWS), *extra]).recipe


def test_all_linear_adapts_every_linear_layer_outside_the_head(tiny_decoders, tiny_models):
    recipe = _recipe(tiny_decoders["llama"], "--lora_target_modules", "all-linear")
    config = modeling.load_config(recipe, LABELS)
    model = modeling.build_model(recipe, config, random_weights=True)
    adapted = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    # RoBERTa's head is classifier.dense + classifier.out_proj, BERT's pooler trains in full: no LoRA there.
    for kind, head in (("roberta", "classifier."), ("bert", "pooler.")):
        recipe = _recipe(tiny_models[kind], "--lora_target_modules", "all-linear")
        model = modeling.build_model(recipe, modeling.load_config(recipe, LABELS), random_weights=True)
        adapted = [n for n, m in model.named_modules() if hasattr(m, "lora_A")]
        assert len(adapted) == 2 * 6 and not any(head in n for n in adapted), adapted


def test_architecture_without_defaults_lists_its_linear_layers(tmp_path):
    from transformers import AlbertConfig

    AlbertConfig(**TINY, embedding_size=16, vocab_size=50).save_pretrained(tmp_path)
    recipe = _recipe(tmp_path)
    config = modeling.load_config(recipe, LABELS)
    with pytest.raises(UsageError) as err:
        modeling.build_model(recipe, config, random_weights=True)
    assert str(err.value) == (
        "no default LoRA target modules for model type 'albert'; its linear layers are "
        "embedding_hidden_mapping_in (1), query (1), key (1), value (1), dense (1), ffn (1), ffn_output (1); "
        "set e.g. --lora_target_modules query,value")
    recipe = _recipe(tmp_path, "--lora_target_modules", "query,value")
    model = modeling.build_model(recipe, config, random_weights=True)
    assert modeling.param_report(model).lora == 2 * 8 * (32 + 32)


def test_model_type_without_a_classifier_class_is_one_line(tmp_path):
    from transformers import MarianConfig

    MarianConfig(d_model=32, encoder_layers=1, decoder_layers=1, vocab_size=50).save_pretrained(tmp_path)
    with pytest.raises(UsageError, match=r"^model type 'marian' has no sequence-classification class in "
                                         r"transformers \(AutoModelForSequenceClassification\); pick a backbone"):
        modeling.load_config(_recipe(tmp_path), LABELS)


# ---------------------------------------------------------------------------------------------------------------
# PEFT's options and bad input

def test_init_lora_weights_list_is_peft_s():
    hint = typing.get_type_hints(LoraConfig)["init_lora_weights"]
    literal = next(a for a in typing.get_args(hint) if typing.get_origin(a) is typing.Literal)
    assert recipe_lib.PEFT_INIT_LORA_WEIGHTS == typing.get_args(literal)
    assert set(recipe_lib._INIT_REFUSED) < set(recipe_lib.PEFT_INIT_LORA_WEIGHTS)


@pytest.mark.parametrize("args, message", [
    (["--lora_target_modules", "all-linear,q_proj"],
     "lora_target_modules all-linear already names every linear layer but the value passed is all-linear,q_proj; "
     "pass all-linear alone or list modules without it"),
    (["--init_lora_weights", "kaiming"],
     "init_lora_weights 'kaiming' is not one of PEFT's values (true, false, gaussian, eva, olora, pissa, "
     "pissa_niter_[number of iters], corda, loftq, orthogonal, mica); the kit supports true, false, gaussian, "
     "orthogonal, pissa, olora or pissa_niter_N"),
    (["--init_lora_weights", "eva"], "init_lora_weights 'eva' is PEFT's but not supported by the kit"),
    (["--init_lora_weights", "pissa_niter_4", "--load_in_4bit", "true"],
     "init_lora_weights 'pissa_niter_4' takes LoRA's start out of the base weights, which a quantised backbone"),
    (["--init_lora_weights", "gaussian", "--lora_impl", "scratch"],
     "init_lora_weights 'gaussian' is PEFT's; the scratch LoRA layer starts from true (B zero) or false only"),
])
def test_bad_lora_options_are_one_line_errors(args, message):
    with pytest.raises(UsageError, match="^" + re.escape(message)):
        parse_recipe(["--task", "agnews", *args])


@pytest.mark.parametrize("impl", ["peft", "scratch"])
def test_rslora_and_gaussian_init_reach_the_layers(tiny_decoders, impl):
    extra = ["--init_lora_weights", "gaussian"] if impl == "peft" else []
    recipe = _recipe(tiny_decoders["qwen2"], "--use_rslora", "true", "--lora_r", "4", "--lora_alpha", "8",
                     "--lora_impl", impl, *extra)
    model = modeling.build_model(recipe, modeling.load_config(recipe, LABELS))
    layer = next(m for m in model.modules() if hasattr(m, "lora_A"))
    assert layer.scaling["default"] == 8 / 2
    assert model.peft_config["default"].use_rslora
    if impl == "peft":  # gaussian: A ~ N(0, 1/r), not Kaiming-uniform's bounded draw
        assert model.peft_config["default"].init_lora_weights == "gaussian"
        assert layer.lora_A["default"].weight.abs().max() > 1 / 32 ** 0.5


@pytest.mark.parametrize("bits", [None, 4])
@pytest.mark.parametrize("reentrant", [False, True])
def test_activation_checkpointing_passes_gradients_to_lora(tiny_decoders, bits, reentrant):
    extra = ["--load_in_4bit", "true"] if bits else []
    recipe = _recipe(tiny_decoders["qwen2"], "--lora_dropout", "0", *extra)
    config = modeling.load_config(recipe, LABELS)
    x = torch.randint(5, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = modeling.build_model(recipe, config).train()
        model.config.pad_token_id = 0
        if checkpointing:
            model.activation_checkpointing_enable({"use_reentrant": reentrant})
        model(input_ids=x, labels=torch.tensor([0, 1])).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if "lora_B" in n})
    assert grads[1] and all(g is not None and g.abs().sum() > 0 for g in grads[1].values())
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-5) for n in grads[0])


def test_qlora_recipe_plans_with_a_dry_run(tiny_decoders, tmp_path):
    resolved = parse_recipe(["--task", QLORA, "--model_name_or_path", str(tiny_decoders["qwen2"]),
                             "--dataset_name", str(AG_NEWS), "--max_train_samples", "8", "--max_eval_samples", "8",
                             "--max_seq_length", "128", "--output_dir", str(tmp_path / "run"), "--dry_run"])
    assert resolved.recipe.load_in_4bit and resolved.recipe.lora_r == 16
    assert run(resolved) is None
    assert not (tmp_path / "run").exists()
    config, model, params = modeling.prepare(resolved.recipe, LABELS, load_weights=False)
    assert modeling.target_modules(resolved.recipe, config) == ["q_proj", "v_proj"]
    # r 16 on q (32 -> 32) and v (32 -> 16: two KV heads of 8) in 2 layers; the score head 32 x 4, no bias.
    assert (params.lora, params.head) == (2 * 16 * (32 + 32 + 32 + 16), 32 * 4)


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_adapters_are_saved_for_the_unchanged_base(tiny_decoders, tmp_path, init):
    # Both take LoRA's start out of the base weights in memory; the saved adapter must predict on the base as
    # loaded from its folder what the trained model predicted (in fp32: under bf16 the trained model keeps its
    # rewritten frozen weights rounded to bf16).
    from transformers import TrainerCallback

    seen = {}

    class Logits(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            batch = processing_class(TEXTS, padding=True, return_tensors="pt")
            with torch.no_grad():
                seen["logits"] = torch.log_softmax(model.eval()(**batch).logits.float(), -1)

    resolved = parse_recipe(["--task", "agnews", "--model_name_or_path", str(tiny_decoders["llama"]), *STEPS,
                             "--lora_r", "4", "--init_lora_weights", init, "--bf16", "false",
                             "--output_dir", str(tmp_path / "run")])
    run(resolved, callbacks=(Logits(),))
    config = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["init_lora_weights"] is True  # converted: delta W = B A - B0 A0
    assert (_logits(Classifier.load(str(tmp_path / "run"), precision="fp32")) - seen["logits"]).abs().max() < 1e-5


def test_paper_figures_of_the_shipped_qlora_recipe_match_the_committed_output():
    from bench import qlora_paper

    text = qlora_paper.main()
    assert text == (REPO / "bench" / "results" / "qlora_paper.txt").read_text().strip()
    # Qwen2.5-0.5B has 494,032,768 parameters; r=16 on q_proj (896 -> 896) and v_proj (896 -> 128) in 24 layers.
    assert "495,117,696 parameters" in text and f"{24 * 16 * (896 + 896 + 896 + 128):,} in LoRA matrices" in text
