"""The experiment scripts' own arithmetic, on hand-written sweep results (the runs themselves are in run.sh)."""

from __future__ import annotations

import sys

import pytest

from conftest import REPO, run_script

sys.path.insert(0, str(REPO / "experiments"))
import compare_tasks  # noqa: E402
import headline  # noqa: E402
import seed_spread  # noqa: E402

CSV = """setting,seed,method,learning_rate,status,trainable_params,best_eval_accuracy,eval_accuracy
"seed=42,method=lora",42,lora,1e-3,trained,10,0.84,0.83
"seed=42,method=full",42,full,5e-5,trained,99,0.85,0.84
"seed=43,method=lora",43,lora,1e-3,trained,10,0.82,0.81
"seed=43,method=full",43,full,5e-5,trained,99,0.85,0.85
"""


def test_seed_spread_pairs_runs_by_seed(tmp_path, capsys):
    (tmp_path / "results.csv").write_text(CSV)
    seed_spread.main([str(tmp_path), str(tmp_path / "spread.md")])
    text = (tmp_path / "spread.md").read_text()
    assert "| method=lora, learning_rate=1e-3 | 2 | 0.8200 | 0.0141 | 0.8100 | 0.8300 |" in text
    # LoRA - full per seed: 83 - 84 = -1, 81 - 85 = -4 points.
    # Standard error 2.12 / sqrt(2) = 1.50; t(1 df) = 12.706, so -2.5 +- 19.06.
    assert "| method=lora, learning_rate=1e-3 | 2 | -2.50 | 2.12 | 1.50 | -21.6 to +16.6 | -1.0 -4.0 |" in text


def test_seed_spread_refuses_a_sweep_without_seeds(tmp_path):
    (tmp_path / "results.csv").write_text(CSV.replace("setting,seed,", "setting,sed,"))
    with pytest.raises(SystemExit, match="did not sweep seed"):
        seed_spread.main([str(tmp_path), str(tmp_path / "spread.md")])


def test_compare_table_adds_a_column_per_variant():
    s = {"task": "mrpc", "metric": "accuracy", "lora_lr": "1e-3", "full_lr": "5e-5", "lora_trainable_percent": 0.976,
         "lora_best": 0.80, "full_best": 0.81, "lora_final": 0.79, "full_final": 0.80, "lora_s_per_epoch": 50.0,
         "full_s_per_epoch": 60.0, "majority_accuracy": 0.68, "lora_accuracy": 0.79, "full_accuracy": 0.80,
         "gap_final_points": -1.0, "gap_best_points": -1.0}
    plain = compare_tasks.markdown([s]).splitlines()
    ablated = compare_tasks.markdown([{**s, "head_only_final": 0.68, "head_only_gap_points": -12.0}],
                                     [("head_only", "LoRA final, classifier only")]).splitlines()
    assert len(ablated[0].split("|")) == len(plain[0].split("|")) + 2
    assert "| LoRA final | full final | gap (pts) | LoRA final, classifier only | gap (pts) | LoRA best |" in ablated[0]
    assert "| 0.7900 | 0.8000 | -1.0 | 0.6800 | -12.0 |" in ablated[2]
    assert ablated[2].endswith("| yes |") and len(ablated[1].split("|")) == len(ablated[0].split("|"))


def test_seed_spread_pairs_further_sweeps_with_the_first_ones_full_runs(tmp_path):
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "results.csv").write_text(CSV)
    (tmp_path / "wider").mkdir()
    (tmp_path / "wider" / "results.csv").write_text(
        "setting,seed,lora_r,status,trainable_params,best_eval_accuracy,eval_accuracy\n"
        '"seed=42,lora_r=16",42,16,trained,20,0.85,0.845\n"seed=43,lora_r=16",43,16,trained,20,0.85,0.84\n')
    seed_spread.main([str(tmp_path / "seeds"), str(tmp_path / "spread.md"), str(tmp_path / "wider")])
    text = (tmp_path / "spread.md").read_text()
    assert "| sweep=wider, lora_r=16 | 2 | 0.8425 | 0.0035 | 0.8400 | 0.8450 |" in text
    # Paired with the first folder's full runs: 84.5 - 84 = +0.5, 84 - 85 = -1 points.
    assert "| sweep=wider, lora_r=16 | 2 | -0.25 | 1.06 | 0.75 | -9.8 to +9.3 | +0.5 -1.0 |" in text
    assert "| method=lora, learning_rate=1e-3 | 2 | -2.50 | 2.12 | 1.50 | -21.6 to +16.6 | -1.0 -4.0 |" in text


def test_seed_spread_plots_the_paired_gaps(tmp_path, capsys):
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "results.csv").write_text(CSV)
    png = tmp_path / "gaps.png"
    seed_spread.main([str(tmp_path / "seeds"), str(tmp_path / "spread.md"), "--plot", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert f"wrote {png}" in capsys.readouterr().out


def test_seed_spread_plot_needs_one_full_setting_and_a_file_name(tmp_path):
    (tmp_path / "results.csv").write_text(CSV.replace(",full,", ",lora,"))
    with pytest.raises(SystemExit, match="has 0 full fine-tuning settings"):
        seed_spread.main([str(tmp_path), str(tmp_path / "spread.md"), "--plot", str(tmp_path / "gaps.png")])
    assert not (tmp_path / "gaps.png").exists() and not (tmp_path / "spread.md").exists()
    with pytest.raises(SystemExit, match="--plot needs a file name"):
        seed_spread.main([str(tmp_path), str(tmp_path / "spread.md"), "--plot"])


@pytest.mark.parametrize("summary", ["rte_levers", "levers_mrpc", "levers_cola", "ffn2_sst2", "ffn2_agnews"])
def test_lever_summary_is_what_the_committed_tables_give(tmp_path, summary):
    # run.sh builds each of these summaries from the tables collected into experiments/; the committed summary
    # must be what those tables give now (rerun that line when a sweep's table changes).
    target = f"experiments/{summary}/spread.md"
    line = next(ln for ln in (REPO / "experiments" / "run.sh").read_text().replace("\\\n", " ").splitlines()
                if target in ln)
    args = line.split("seed_spread.py", 1)[1].split()
    out, plot = tmp_path / "spread.md", tmp_path / "gaps.png"
    args = [str(out) if a == target else str(plot) if a.endswith(".png") else
            str(REPO / a) if a.startswith("experiments/") else a for a in args]
    seed_spread.main(args)
    assert out.read_text() == (REPO / target).read_text()
    assert plot.exists() and (REPO / "experiments" / summary / "paired_gaps.png").exists()


def test_step_time_times_each_lora_setting_against_full():
    # Two LoRA settings within one budget: the recipe's (query, value at r=8) and the feed-forward scope at r=2.
    ffn2 = "--lora_target_modules query+value+dense --lora_r 2 --lora_alpha 4 --lora_layers 0-5"
    proc = run_script("experiments/step_time.py", "--steps", "1", "--batch", "2", "--tokens", "8",
                      "--lora", "", "--lora", ffn2, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 4, proc.stdout
    assert lines[1].startswith("median step: full ") and "(22,713,986 trainable)" in lines[1]
    assert lines[2].endswith("[recipe default]") and "(222,338 trainable)" in lines[2]
    assert lines[3].endswith(f"[{ffn2}]") and "(222,338 trainable)" in lines[3]


def test_step_time_refuses_a_bad_setting_before_loading_a_model():
    proc = run_script("experiments/step_time.py", "--lora", "--lora_r x")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --lora '--lora_r x': lora_r should be int but the value passed is 'x'; "
        "fix it in the recipe or pass --lora_r with a valid value"]


def test_headline_is_what_the_committed_summaries_give(tmp_path):
    # The headline table is read off the committed spread.md files; README shows it as committed.
    headline.main([str(tmp_path)])
    committed = (REPO / "experiments" / "headline" / "headline.md").read_text()
    assert (tmp_path / "headline.md").read_text() == committed
    assert (tmp_path / "headline.png").exists()
    assert committed in (REPO / "README.md").read_text()
    rows = committed.splitlines()[2:]
    assert [r.split(" | ")[0].lstrip("| ") for r in rows] == [
        "SST-2", "CoLA (feed-forward scope chosen here)", "MRPC (feed-forward scope chosen here)", "RTE", "AG News"]
    # Every interval reaches below -1: within 1 point is claimed nowhere; q,v's CoLA and MRPC lie wholly below.
    assert [r.rsplit(" | ", 1)[1].rstrip(" |") for r in rows] == [
        "q,v r=8: not shown; q,v,o + feed-forward r=2: not shown",
        "q,v r=8: no; q,v,o + feed-forward r=2: not shown",
        "q,v r=8: no; q,v,o + feed-forward r=2: not shown",
        "q,v r=8: not shown; q,v,o + feed-forward r=2: not shown",
        "q,v r=8: not shown; q,v,o + feed-forward r=2: not shown"]


def test_headline_verdict_reads_the_interval_not_the_mean():
    assert headline.verdict("-1.0 to +0.5") == "yes"
    assert headline.verdict("-1.4 to +3.5") == "not shown"  # mean +1.07, but the interval crosses -1
    assert headline.verdict("-4.4 to -1.8") == "no"
    assert headline.verdict("nan") == "not shown"


def test_headline_names_the_summary_that_lacks_a_row(tmp_path, monkeypatch):
    monkeypatch.setitem(headline.SOURCES, "SST-2", ("accuracy", "levers_sst2",
                                                    {"qv": ("levers_sst2", "sweep=nowhere"),
                                                     "ffn2": ("ffn2_sst2", "sweep=ffn2_sst2,")}))
    with pytest.raises(SystemExit, match=r"levers_sst2/spread.md: 0 rows start with 'sweep=nowhere'"):
        headline.main([str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
