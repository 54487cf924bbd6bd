"""mimalloc under train.py, opt-in: `LORAKIT_ALLOCATOR=mimalloc` re-executes the entry point once with it preloaded.

On CPU, a training step allocates and frees activations of a dozen shapes (length-grouped batches padded to a
multiple of 8). glibc raises its mmap threshold to the largest block freed, after which those blocks come from
its heap and fragment it: the AG News run of `bench.run` peaks at 2.16 GB, of which about 0.3 GB is heap that
training does not use (`python -m bench.allocator`). mimalloc segregates blocks by size class, so freed
activations are reused by the next step's; with purging off (`MIMALLOC_PURGE_DELAY=-1`) it also keeps the pages
instead of handing them back to the kernel, which would make every step fault and zero them again (mimalloc's
default purge costs 0.8x the speed). Measured by `bench.allocator`: lower peak and faster steps than glibc.

`LD_PRELOAD` only takes effect when a process starts, so with `LORAKIT_ALLOCATOR=mimalloc` `train.py` re-executes
itself before torch loads, as Intel's PyTorch launcher does for jemalloc and tcmalloc. It is opt-in because it
changes how the process starts (a debugger or profiler attached to the first process loses it). The library comes
from the `cmeel-mimalloc` wheel (`pip install cmeel-mimalloc==3.4.3`, or requirements-dev.txt; Linux only).
Nothing here imports torch.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

ENV = "LORAKIT_ALLOCATOR"  # "mimalloc": run train.py on mimalloc; unset or anything else: the C library's malloc
PRELOADED = "LORAKIT_MIMALLOC_PRELOADED"  # set by reexec() for the new process, so it is not re-executed again
SETTINGS = {"MIMALLOC_PURGE_DELAY": "-1"}  # keep freed pages for the next step (see the module docstring)


def library() -> Path | None:
    """Path of the shared libmimalloc installed by the `cmeel-mimalloc` wheel, or None."""
    try:
        files = metadata.distribution("cmeel-mimalloc").files or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "libmimalloc.so":
            path = Path(file.locate())
            return path if path.is_file() else None
    return None


def preload_env(environ: dict | None = None) -> dict[str, str]:
    """The environment variables that make a new process run on mimalloc: empty unless `environ` opts in
    (LORAKIT_ALLOCATOR=mimalloc) and the library is there, or when the process was re-executed already."""
    environ = os.environ if environ is None else environ
    if not sys.platform.startswith("linux") or environ.get(ENV) != "mimalloc" or environ.get(PRELOADED):
        return {}
    lib = library()
    if lib is None:
        return {}
    preload = " ".join(p for p in (str(lib), environ.get("LD_PRELOAD", "")) if p)
    return {**{k: environ.get(k, v) for k, v in SETTINGS.items()}, "LD_PRELOAD": preload, PRELOADED: "1"}


def reexec() -> None:
    """With LORAKIT_ALLOCATOR=mimalloc, replace this process by the same command on mimalloc, once; return (and run
    on as is) when that does not apply.

    Call it first thing in an entry point's `__main__` block, never from library code: the process is replaced.
    """
    update = preload_env()
    if not update:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **update})
    except OSError:
        return  # the interpreter could not be re-run (unusual launchers): train on the system allocator


def active() -> str:
    """The allocator this process runs on, for the run log: "mimalloc" when it is mapped in, else "system"."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return "mimalloc" if "libmimalloc" in maps else "system"


def describe() -> str:
    """One line for the run log: the allocator, and why when it is not mimalloc."""
    if active() == "mimalloc":
        return f"mimalloc (MIMALLOC_PURGE_DELAY={os.environ.get('MIMALLOC_PURGE_DELAY', 'its default')})"
    if os.environ.get(ENV) != "mimalloc":
        return f"the C library's ({ENV}=mimalloc runs train.py on mimalloc)"
    if os.environ.get(PRELOADED):
        return "the C library's (mimalloc was preloaded but did not load; see the loader's message above)"
    if not sys.platform.startswith("linux"):
        return "the C library's (mimalloc is preloaded on Linux only)"
    if library() is None:
        return "the C library's (cmeel-mimalloc is not installed: pip install cmeel-mimalloc==3.4.3)"
    return "the C library's (only train.py's own process preloads mimalloc)"
