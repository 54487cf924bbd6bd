"""`train.py --help`: every recipe key with its default (or a recipe's value) and one line, grouped, without
importing torch or transformers (the kit's keys come from `Recipe`, TrainingArguments' from lorakit.trainingargs)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from .recipe import CONFIG_DIR, GROUPS, Recipe, load_yaml, shipped_tasks
from .trainingargs import DOCS_URL, KIT_DEFAULTS, SHOWN

USAGE = """\
usage: python train.py --task NAME | --config PATH [--KEY VALUE ...] [--sweep KEY=V1,V2] [--dry_run] [--debug]
       accelerate launch [--config_file configs/accelerate/NAME.yaml] train.py ...

Train a LoRA text classifier from a recipe: --task NAME reads configs/NAME.yaml ({tasks}), --config PATH your own
YAML file; every key below can be set in the file or overridden as --key value (lists comma-separated).
--task NAME --help shows that recipe's values. --sweep KEY=V1,V2 trains one run per value; --dry_run plans the
run and writes nothing; --debug shows tracebacks and library load reports. Offline, set HF_HUB_OFFLINE=1 and pass
local folders to --model_name_or_path and --dataset_name."""


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "(empty)"
    return str(value)


def _first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (not the one of "e.g." or "et al.")."""
    return re.split(r"(?<!e\.g\.)(?<! al\.)(?<=\.)\s", text.strip(), maxsplit=1)[0]


def help_text(argv: list[str]) -> str:
    """The help: usage, then each group of keys with its default, or with the value of the recipe that argv names
    (`--task NAME` or `--config PATH`), marked `*` where the recipe sets it."""
    values, source = {}, None
    for flag in ("--task", "--config"):
        if flag in argv and argv.index(flag) + 1 < len(argv):
            name = argv[argv.index(flag) + 1]
            path = CONFIG_DIR / f"{name}.yaml" if flag == "--task" else Path(name)
            values, source = load_yaml(path), str(path)
    kit = {f.name: f for f in dataclasses.fields(Recipe)}
    rows: dict[str, list[tuple[str, str, str]]] = {group: [] for group in GROUPS}
    for group, keys in GROUPS.items():
        for key in keys:
            f = kit[key]
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            rows[group].append((key, _value(key, default, values), _first_sentence(f.metadata["help"])))
    for key, (group, default, text) in SHOWN.items():
        rows[group].append((key, _value(key, KIT_DEFAULTS.get(key, default), values), text))
    other = sorted(k for k in values if k not in kit and k not in SHOWN)
    rows["training"] += [(key, _value(key, None, values), "TrainingArguments key set by the recipe.") for key in other]

    width = max(len(key) for group in rows.values() for key, _, _ in group) + 2
    value_width = min(28, max(len(v) for group in rows.values() for _, v, _ in group)) + 1
    lines = [USAGE.format(tasks=", ".join(shipped_tasks())), ""]
    if source:
        lines += [f"values of {source} (* set by the recipe; the rest are defaults):", ""]
    for group, entries in rows.items():
        lines.append(f"{group} keys:")
        lines += [f"  --{key:<{width}}{value:<{value_width}} {text}" for key, value, text in entries]
        lines.append("")
    lines.append(f"Every other TrainingArguments field passes through as well: {DOCS_URL}")
    return "\n".join(lines)


def _value(key: str, default, values: dict) -> str:
    return f"{_show(values[key])}*" if key in values else _show(default)


def wants_help(argv: list[str]) -> bool:
    return "--help" in argv or "-h" in argv
