"""Recipes: every shipped recipe parses through the real parser; overrides win; bad keys and values are named."""

from __future__ import annotations

import pytest
from transformers import TrainingArguments

from lorakit.errors import UsageError
from lorakit.recipe import CONFIG_DIR, parse_recipe, shipped_tasks
from lorakit.training import training_arguments

TASKS = ["agnews", "cola", "mrpc", "rte", "sst2"]


def test_the_five_tasks_are_shipped():
    assert set(TASKS) <= set(shipped_tasks())


@pytest.mark.parametrize("task", shipped_tasks())
def test_every_recipe_parses_and_builds_training_arguments(task, tmp_path):
    resolved = parse_recipe(["--task", task])
    recipe = resolved.recipe
    assert recipe.task_name
    assert recipe.metrics
    if recipe.dataset_name:  # a Hub dataset names its labels; a user's file (custom_csv) may take them from the data
        assert recipe.label_names
    else:
        assert recipe.train_file and recipe.validation_file
    assert recipe.method == "lora" and recipe.lora_r > 0
    kwargs, _ = training_arguments(resolved)
    kwargs["output_dir"] = str(tmp_path)
    args = TrainingArguments(**kwargs)  # the real constructor accepts every key the recipe passes through
    assert args.learning_rate == resolved.training["learning_rate"]
    assert args.optim == "adamw_torch_fused"
    assert args.train_sampling_strategy == "group_by_length"
    assert 0 < args.warmup_steps < 1  # a warmup ratio (0.06 in the LoRA paper's RoBERTa setup)
    assert args.metric_for_best_model == recipe.headline_metric


def test_glue_recipes_follow_the_lora_paper():
    """LoRA paper Table 9 (RoBERTa-base): lr and epochs per task, batch 16, r=8, warmup 0.06."""
    paper = {"sst2": (5e-4, 60), "mrpc": (4e-4, 30), "cola": (4e-4, 80), "rte": (5e-4, 80)}
    for task, (lr, epochs) in paper.items():
        resolved = parse_recipe(["--task", task])
        assert resolved.training["learning_rate"] == lr
        assert resolved.training["num_train_epochs"] == epochs
        assert resolved.training["per_device_train_batch_size"] == 16
        assert resolved.recipe.lora_r == 8 and resolved.recipe.lora_alpha == 16


def test_headline_metrics():
    assert parse_recipe(["--task", "cola"]).recipe.metrics[0] == "matthews_correlation"
    assert parse_recipe(["--task", "mrpc"]).recipe.metrics == ["accuracy", "f1"]
    assert parse_recipe(["--task", "mrpc"]).recipe.text_columns == ("sentence1", "sentence2")
    agnews = parse_recipe(["--task", "agnews"]).recipe
    assert (agnews.validation_split_percentage, agnews.test_split) == (5, "test")  # selects on train, tests once


def test_command_line_overrides_win_and_are_typed():
    resolved = parse_recipe(["--task", "sst2", "--learning_rate", "1e-3", "--lora_r=4", "--num_train_epochs", "2",
                             "--lora_target_modules", "query,key,value", "--lora_layers", "0-2,5", "--dry_run",
                             "--bf16", "false", "--output_dir", "x"])
    assert resolved.training["learning_rate"] == 1e-3
    assert resolved.recipe.lora_r == 4
    assert resolved.training["num_train_epochs"] == 2.0
    assert resolved.recipe.lora_target_modules == ["query", "key", "value"]
    assert resolved.recipe.lora_layers == [0, 1, 2, 5]
    assert resolved.recipe.dry_run is True
    assert resolved.training["bf16"] is False
    assert set(resolved.overrides) == {"learning_rate", "lora_r", "num_train_epochs", "lora_target_modules",
                                       "lora_layers", "dry_run", "bf16", "output_dir"}


@pytest.mark.parametrize("value, expected", [("all", "all"), ("non_padding", "non_padding"), ("true", True),
                                             ("false", False)])
def test_a_bool_or_str_field_takes_both(value, expected):
    # TrainingArguments.include_num_input_tokens_seen is `str | bool`: a word stays a word, a boolean a boolean.
    resolved = parse_recipe(["--task", "sst2", "--include_num_input_tokens_seen", value])
    assert resolved.training["include_num_input_tokens_seen"] == expected


def test_user_recipe_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("dataset_name: my/data\ntext_column_names: [a, b]\nlearning_rate: '2e-4'\nlora_r: 16\n")
    resolved = parse_recipe(["--config", str(path), "--lora_r", "2"])
    assert resolved.recipe.text_columns == ("a", "b")
    assert resolved.training["learning_rate"] == 2e-4  # a YAML string converted like a command-line value
    assert resolved.recipe.lora_r == 2
    assert resolved.source == str(path)


@pytest.mark.parametrize("argv, message", [
    (["--task", "nope"], "unknown task 'nope'"),
    (["--config", "/no/such/recipe.yaml"], "recipe file '/no/such/recipe.yaml' not found"),
    ([], "no recipe given"),
    (["--task", "sst2", "--learnin_rate", "1e-3"], "unknown key '--learnin_rate'"),
    (["--task", "sst2", "--lora_r", "eight"], "lora_r should be int but the value passed is 'eight'"),
    (["--task", "sst2", "--lora_r", "0"], "lora_r"),
    (["--task", "sst2", "--lora_alpha", "-1"], "lora_alpha"),
    (["--task", "sst2", "--lora_dropout", "1.0"], "lora_dropout"),
    (["--task", "sst2", "--method", "prefix"], "method should be lora or full"),
    (["--task", "sst2", "--metrics", "bleu"], "metrics for single_label_classification should be drawn from"),
    (["--task", "sst2", "stray"], "unexpected argument 'stray'"),
])
def test_bad_recipes_name_the_problem(argv, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_recipe(argv)


def test_unknown_key_in_a_file_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("dataset_name: x\nlora_rank: 8\n")
    with pytest.raises(UsageError, match=r"unknown key 'lora_rank'.*did you mean lora_r"):
        parse_recipe(["--config", str(path)])


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("dataset_name: x\nlora_r: [8\n")
    with pytest.raises(UsageError, match="not valid YAML at line"):
        parse_recipe(["--config", str(path)])


def test_hub_token_is_not_a_recipe_key():
    with pytest.raises(UsageError, match="unknown key '--hub_token'"):
        parse_recipe(["--task", "sst2", "--hub_token", "hf_secret"])


def test_configs_dir_is_the_repo_one():
    assert (CONFIG_DIR / "sst2.yaml").is_file()


def test_stsb_recipe_follows_the_lora_paper_and_is_a_regression():
    """LoRA paper Table 9, RoBERTa-base STS-B: lr 4e-4, 40 epochs, batch 16, r=8 alpha 8, max length 512."""
    resolved = parse_recipe(["--task", "stsb"])
    recipe = resolved.recipe
    assert (resolved.training["learning_rate"], resolved.training["num_train_epochs"]) == (4e-4, 40)
    assert resolved.training["per_device_train_batch_size"] == 16 and resolved.training["warmup_steps"] == 0.06
    assert (recipe.lora_r, recipe.lora_alpha, recipe.max_seq_length) == (8, 8, 512)
    assert recipe.problem_type == "regression" and recipe.metrics == ["pearson", "spearmanr"]


def test_go_emotions_recipe_is_multi_label_with_the_datasets_28_names():
    recipe = parse_recipe(["--task", "go_emotions"]).recipe
    assert recipe.problem_type == "multi_label_classification" and recipe.headline_metric == "f1_macro"
    assert len(recipe.label_names) == 28 and recipe.label_names[-1] == "neutral" and recipe.threshold == 0.5


def test_metrics_default_to_the_problem_types():
    assert parse_recipe(["--task", "stsb", "--metrics", "none"]).recipe.metrics == ["pearson", "spearmanr"]
    recipe = parse_recipe(["--task", "go_emotions", "--metrics", "none"]).recipe
    assert recipe.metrics == ["f1_micro", "f1_macro", "exact_match"]
    assert parse_recipe(["--task", "sst2", "--metrics", "none"]).recipe.metrics == ["accuracy"]
