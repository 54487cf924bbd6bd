"""Importing lorakit changes no global state: logging, warning filters and matplotlib are the entry scripts' to set."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

# Run in a fresh interpreter: the libraries lorakit builds on are imported first (their own import-time changes are
# theirs), then every lorakit module; the process-wide state must be the same before and after.
PROBE = r"""
import importlib, json, logging, pkgutil, warnings
import matplotlib, torch, transformers, peft, datasets, accelerate, bitsandbytes, sklearn, huggingface_hub

def state():
    loggers = {name: (lg.level, len(lg.handlers), lg.propagate) for name, lg in logging.root.manager.loggerDict.items()
               if isinstance(lg, logging.Logger)}
    return {"root": [logging.root.level, [repr(h) for h in logging.root.handlers]],
            "loggers": {k: v for k, v in loggers.items() if not k.startswith("lorakit")},
            "warnings": [repr(f) for f in warnings.filters],
            "backend": matplotlib.rcParams._get_backend_or_none(), "pyplot": "matplotlib.pyplot" in __import__("sys").modules}

before = state()
import lorakit
names = sorted(m.name for m in pkgutil.walk_packages(lorakit.__path__, "lorakit."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "before": before, "after": state()}))
"""


def test_importing_every_module_changes_no_global_state():
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"lorakit.training", "lorakit.trainer", "lorakit.cpu.dropout", "lorakit.adapters.lora",
            "lorakit.report", "lorakit.plots"} <= set(result["modules"])
    for key in ("root", "warnings", "backend", "pyplot"):
        assert result["before"][key] == result["after"][key], key
    before, after = result["before"]["loggers"], result["after"]["loggers"]
    assert {name: after[name] for name in before} == before  # no existing logger touched
    assert all(after[name] == [0, 0, True] for name in set(after) - set(before))  # new ones as logging makes them


def test_run_folder_and_predictions_need_no_torch():
    # The ONNX path reads a run folder and prints predictions in a process that never imports torch.
    code = ("import sys, lorakit.runfolder, lorakit.predictions, lorakit.textio, lorakit.recipe; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["False", "False"], proc.stderr[-2000:]
