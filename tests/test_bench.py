"""The speed benchmark's own code paths, on tiny models (timings are measured, never asserted): the FLOP formula
against torch's FLOP counter, the matmul bound, both training pipelines, and the one command end to end."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForSequenceClassification, BertConfig, RobertaConfig

from bench import hardware, run, training
from conftest import REPO, minilm_path

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=130)


@pytest.mark.parametrize("config_class", [BertConfig, RobertaConfig])
@pytest.mark.parametrize("tokens", [7, 20])
def test_flop_formula_counts_every_matmul_torch_counts(config_class, tokens):
    config = config_class(vocab_size=100, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                          intermediate_size=96, num_labels=3)
    torch.manual_seed(0)
    # Eager attention: torch's counter has no formula for the CPU SDPA kernel, so it would miss the T^2 terms.
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, target_modules=["query", "value"]))
    batch = {"input_ids": torch.randint(3, 100, (1, tokens)), "labels": torch.tensor([1])}
    with FlopCounterMode(display=False) as train_count:
        model(**batch).loss.backward()
    with FlopCounterMode(display=False) as forward_count, torch.no_grad():
        model(**batch)
    shapes = hardware.model_shapes(model.config)
    assert hardware.lora_train_flops(shapes, tokens) == train_count.get_total_flops()
    assert hardware.lora_forward_flops(shapes, tokens) == forward_count.get_total_flops()


def test_matmul_bound_measures_each_shape_and_their_mix():
    bound = hardware.matmul_bound(32, 48, tokens=64, threads=1, repeats=1)
    for dtype in ("fp32", "bf16"):
        rates = bound[dtype]
        assert all(rates[k] > 0 for k in ("hh", "hi", "ih"))
        # A FLOP-weighted harmonic mean lies between its slowest and fastest member.
        assert min(rates["hh"], rates["hi"], rates["ih"]) <= rates["mix"] <= max(rates["hh"], rates["hi"], rates["ih"])
    best = hardware.best_of([bound, {**bound, "bf16": {k: v * 2 for k, v in bound["bf16"].items()}}])
    assert best["bf16"]["mix"] == 2 * bound["bf16"]["mix"] and best["fp32"] == bound["fp32"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A tiny random BERT with MiniLM's real tokenizer, so token counts are the real ones."""
    folder = tmp_path_factory.mktemp("bench") / "tiny-bert"
    return training.random_model(folder, "bert", str(minilm_path()), **TINY)


def test_plain_pipeline_pads_every_text_to_128_in_fp32_batches_of_16(tiny_bert):
    result = training.measure("plain", tiny_bert, "sst2", 48, plain_steps=2)
    assert (result["batch"], result["precision"], result["samples"]) == (16, "fp32", 32)  # step 1 is not timed
    assert result["padded_tokens"] == 2 * 16 * training.MAX_LENGTH
    lengths = training.token_lengths(tiny_bert, training.WORKLOADS["sst2"], 48)
    assert result["mean_tokens"] == pytest.approx(statistics.fmean(lengths))
    assert result["padded_tokens_per_s"] / result["tokens_per_s"] == pytest.approx(128 / statistics.fmean(lengths))
    assert result["padded_flops_per_sample"] > result["flops_per_sample"] > 0
    assert result["peak_rss_mb"] > 0


@pytest.mark.parametrize("workload", ["sst2", "agnews"])
def test_kit_pipeline_runs_train_py_code_on_the_shipped_recipe(tiny_bert, workload):
    result = training.measure("kit", tiny_bert, workload, 40, eval_samples=16)
    # Every epoch after the first is timed, each over all 40 rows.
    assert result["samples"] == 40 * training.TIMED_EPOCHS
    assert result["timed"] == f"epochs 2-{1 + training.TIMED_EPOCHS}"
    # The recipe's batch size, the kit's precision decision for this CPU.
    assert result["batch"] == {"sst2": 16, "agnews": 32}[workload]
    from lorakit.hardware import cpu_has_bf16

    assert result["precision"].startswith("bf16") == cpu_has_bf16()
    lengths = training.token_lengths(tiny_bert, training.WORKLOADS[workload], 40)
    # Dynamic padding: each timed epoch executes every real token and at most the longest row's length (rounded
    # up to a multiple of 8) per row.
    longest = -(-max(lengths) // 8) * 8
    epochs = training.TIMED_EPOCHS
    assert epochs * sum(lengths) <= result["padded_tokens"] <= epochs * 40 * longest < epochs * 40 * training.MAX_LENGTH
    assert result["eval_samples_per_s"] > 0 and result["first_epoch_samples_per_s"] > 0


def test_a_missing_benchmark_is_reported_not_raised():
    status, message = run.run_other("no_such_benchmark", tiny=True)
    assert status == "missing" and "bench/no_such_benchmark.py is missing" in message


def test_one_command_prints_the_table_and_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--tiny", "--skip_others", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    names = [p["name"] for p in data["phases"]]
    assert names == ["tiny-bert sst2 plain", "tiny-bert sst2 kit", "tiny-bert sst2 kit batch 32",
                     "tiny-roberta sst2 plain", "tiny-roberta sst2 kit"]
    assert all(len(p["results"]) == 1 and not p["errors"] for p in data["phases"])
    assert [r["batch"] for p in data["phases"] for r in p["results"]] == [16, 16, 32, 16, 16]
    assert set(data["bounds"]) == {"tiny-bert", "tiny-roberta"}
    # The bound at each phase's own rows per step: the plain pipeline's 16 x 128, and the kit's padded batches.
    rows = {int(r) for bound in data["row_bounds"].values() for r in bound}
    assert 2048 in rows and any(r < 16 * 128 for r in rows), data["row_bounds"]
    assert all(b["bf16"]["mix"] > 0 for bound in data["row_bounds"].values() for b in bound.values())
    table = [line for line in proc.stdout.splitlines() if line.startswith("| tiny-")]
    ratios = [line for line in table if line.rstrip(" |").endswith("x**")]
    assert len(ratios) == 3, proc.stdout  # b/a on each kit row, the larger batch's included
    assert any("| kit, batch set | 32 |" in line for line in ratios), proc.stdout
    assert not any("not measured" in line for line in table), proc.stdout


def test_step_profile_runs_and_splits_the_step():
    from bench import step_profile

    result = step_profile.main(["--steps", "1", "--batch", "2", "--tokens", "8"])
    assert set(result["median_ms"]) == {step_profile.KIT, "frozen linears fp32", "torch's dropout and SDPA's"}
    assert set(result["ratios"]) == {"frozen linears fp32", "torch's dropout and SDPA's"}
    assert min(result["ratios"].values()) > 0
    assert 0 < sum(result["shares"].values()) <= 1
    # The matmuls it replays are every one the step ran, backward's included: their FLOPs are the formula's.
    from transformers import AutoConfig

    shapes = hardware.model_shapes(AutoConfig.from_pretrained(minilm_path(), num_labels=2))
    matmuls = result["matmuls"]
    assert round(matmuls["gflop"] * 1e9) == 2 * hardware.lora_train_flops(shapes, 8)
    assert sum(k["calls"] for k in matmuls["kinds"].values()) == matmuls["calls"]
    assert 0 < matmuls["share_of_step"] and matmuls["gflops"] > 0 and matmuls["bound_gflops"] > 0
    # Every op of the step, replayed: the matmuls among them, nearly all replayable on fresh tensors.
    ops = result["ops"]
    assert ops["replayed"] + ops["failed"] == ops["calls"] > matmuls["calls"]
    assert ops["failed"] <= ops["calls"] // 20
    assert sum(k["calls"] for k in ops["kinds"].values()) == ops["replayed"]
    assert {"views (no data touched)", "full-width"} <= set(ops["kinds"]) and ops["ms"] > 0
    assert "aten.mm.default" in ops["top"] and all(op["calls"] > 0 for op in ops["top"].values())


def test_allocator_benchmark_runs_every_setting_on_its_allocator(tiny_bert, capsys):
    from bench import allocator

    summary = allocator.main(["--rounds", "1", "--samples", "40", "--eval_samples", "16", "--model", str(tiny_bert)])
    assert list(summary) == ["glibc default", "glibc, mmap threshold 128 KB", "mimalloc, default purge (10 ms)",
                             allocator.KIT]
    assert [s["allocator"] for s in summary.values()] == ["system", "system", "mimalloc", "mimalloc"]
    assert all(s["peak_rss_mb"] > 0 and s["samples_per_s"] > 0 for s in summary.values())
    assert "| mimalloc, purge off (LORAKIT_ALLOCATOR=mimalloc) |" in capsys.readouterr().out


def test_step_options_times_every_option(tiny_bert):
    from bench import step_options

    result = step_options.main(["--steps", "2", "--batch", "2", "--lengths", "8", "--model", str(tiny_bert)])
    assert list(result["median_ms"]) == list(step_options.OPTIONS) and step_options.KIT in result["median_ms"]
    assert all(ms > 0 for ms in result["median_ms"].values()) and all(s > 0 for s in result["first_pass_s"].values())


def test_step_options_copies_are_what_they_say(tiny_bert):
    from torch.profiler import ProfilerActivity, profile

    from bench import step_options
    from lorakit.cpu.attention import NAME
    from lorakit.cpu.dropout import FastDropout

    x = torch.randint(5, 90, (2, 8))

    def forward_ops(name: str):
        option = step_options.OPTIONS[name]
        model, _ = step_options._model(option, str(tiny_bert))
        with profile(activities=[ProfilerActivity.CPU]) as prof, step_options.dropout_apply(option):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                model(input_ids=x, attention_mask=torch.ones_like(x))  # in training mode, as the bench steps
        return model, {e.key for e in prof.key_averages()}

    flash, sdpa_math = "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math"
    kit, ops = forward_ops(step_options.KIT)
    assert any(isinstance(m, FastDropout) for m in kit.modules()) and kit.config._attn_implementation == NAME
    assert flash not in ops and sdpa_math not in ops  # the probabilities' dropout is the kit's own
    assert sdpa_math in forward_ops("transformers' SDPA attention")[1]  # dropout sends SDPA to its math kernel
    assert flash in forward_ops("attention dropout 0, SDPA's choice (flash)")[1]
    assert flash not in forward_ops("attention dropout 0, the kit's (math kernel)")[1]
    assert "aten::bitwise_and" in ops  # the kit's masks select bits; the other copy multiplies by the bool mask
    assert "aten::bitwise_and" not in forward_ops("dropout masks applied as a bool multiply")[1]
    compiled = forward_ops("dropout compiled (one fused kernel each way)")[1]
    assert "_ScaleByMask" in ops and "_ScaleByMask" not in compiled and "_CompiledDropout" in compiled
    assert "aten::bitwise_and" not in compiled and any(op.startswith("## Call CompiledFxGraph") for op in compiled)
    magnitudes = [n for n, _ in forward_ops("DoRA (use_dora)")[0].named_parameters() if "lora_magnitude_vector" in n]
    assert len(magnitudes) == 2 * 2 and not any("lora_magnitude_vector" in n for n, _ in kit.named_parameters())
