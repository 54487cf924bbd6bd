"""With LORAKIT_ALLOCATOR=mimalloc, train.py re-executes itself onto mimalloc (lorakit/cpu/allocator.py); what that
buys is bench.allocator's to say."""

from __future__ import annotations

import sys

import pytest

from conftest import GLUE, make_tiny_model, run_script
from lorakit.cpu import allocator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mimalloc is preloaded on Linux only")


def test_the_wheel_ships_the_library():
    lib = allocator.library()
    assert lib is not None and lib.name == "libmimalloc.so" and lib.is_file()


def test_preload_env_keeps_the_users_settings():
    opt_in = {allocator.ENV: "mimalloc"}
    env = allocator.preload_env({**opt_in, "LD_PRELOAD": "/usr/lib/libfoo.so"})
    assert env["LD_PRELOAD"] == f"{allocator.library()} /usr/lib/libfoo.so"  # ours first, the user's kept
    assert env["MIMALLOC_PURGE_DELAY"] == "-1" and env[allocator.PRELOADED] == "1"
    assert allocator.preload_env({**opt_in, "MIMALLOC_PURGE_DELAY": "50"})["MIMALLOC_PURGE_DELAY"] == "50"


@pytest.mark.parametrize("environ", [{}, {allocator.ENV: "system"},
                                     {allocator.ENV: "mimalloc", allocator.PRELOADED: "1"}])
def test_no_preload_unless_opted_in_and_not_yet_done(environ):
    # PRELOADED marks the re-executed process: asking again would re-execute it forever.
    assert allocator.preload_env(environ) == {}


def _dry_run(tmp_path, env: dict | None = None):
    folder = make_tiny_model("roberta", tmp_path / "config-only", weights=False)
    proc = run_script("train.py", "--task", "agnews", "--model_name_or_path", str(folder), "--dataset_name",
                      str(GLUE.parent / "ag_news"), "--max_seq_length", "64", "--output_dir", str(tmp_path / "out"),
                      "--lora_r", "4", "--dry_run", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def test_train_py_runs_on_mimalloc_with_its_arguments_intact(tmp_path):
    log = _dry_run(tmp_path, env={allocator.ENV: "mimalloc", "LD_PRELOAD": ""})
    assert "C allocator: mimalloc (MIMALLOC_PURGE_DELAY=-1)" in log
    assert "LoRA r=4" in log and "dry run" in log  # the re-executed process got the same command line


def test_train_py_stays_on_the_c_library_by_default(tmp_path):
    log = _dry_run(tmp_path, env={allocator.ENV: "", allocator.PRELOADED: ""})
    assert "C allocator: the C library's (LORAKIT_ALLOCATOR=mimalloc runs train.py on mimalloc)" in log

