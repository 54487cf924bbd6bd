"""Safe writes: results are written aside, then renamed into place, so a crash never leaves half a file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .errors import UsageError
from .runfolder import ADAPTER_FILES, METRICS_FILE, MODEL_FILES, RECIPE_FILE

# Files whose presence means a folder holds a run (ours, or an adapter someone saved).
RUN_MARKERS = (ADAPTER_FILES[0], METRICS_FILE, RECIPE_FILE, MODEL_FILES[0])


def holds_run(folder: Path) -> bool:
    return folder.is_dir() and (any((folder / m).exists() for m in RUN_MARKERS)
                                or any(folder.glob("checkpoint-*")))


def check_output_dir(folder: Path, *, overwrite: bool, resuming: bool) -> None:
    """Refuse to write into a folder that holds another run unless the user asked for it."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"output_dir {str(folder)!r} is a file; pass a folder path with --output_dir")
    if holds_run(folder) and not (overwrite or resuming):
        raise UsageError(f"output_dir {str(folder)!r} already holds a run; pass another --output_dir, "
                         "--resume_from_checkpoint latest to continue it, or --overwrite_output_dir")


def next_folder(dest: Path) -> Path:
    """Where a run that replaces the run in `dest` trains (checkpoints and final files): beside it and hidden, so
    that `dest` keeps the old run whole until the new one is complete (`swap_in`)."""
    return dest.parent / f".{dest.name}.next"


def final_folder(work: Path) -> Path:
    """The folder a run training in `work` ends up in: `work` itself, or the folder `next_folder` was made for."""
    name = work.name
    return work.parent / name[1:-len(".next")] if name.startswith(".") and name.endswith(".next") else work


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 with RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def swap_in(new: Path, dest: Path) -> None:
    """Put the complete folder `new` at `dest`: one atomic exchange with the old folder where the OS has it, so a
    kill at any moment leaves the old run or the new one at `dest`, never a mix; then the old one is deleted."""
    if not dest.exists():
        os.replace(new, dest)
        return
    if not _exchange(new, dest):  # elsewhere: two renames, with the old run kept aside until the second is done
        old = dest.parent / f".{dest.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(new, dest)
        new = old
    shutil.rmtree(new, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ordinary_modes(path: Path) -> None:
    """Give `path` (and, for a folder, everything in it) the mode a plain open() or mkdir would: 0666 or 0777 less
    the umask. tempfile makes its files 0600 and its folders 0700, and some writers (safetensors) write through
    such files: renamed into place as they are, a teammate could not read a shared run."""
    mask = _umask()
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def staged_folder(dest: Path, last: str | None = None):
    """Yield a temporary folder beside `dest`; on success move its files into `dest` (`last` moved last,
    so its presence marks a complete set). On an exception nothing in `dest` changes."""
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest))
    try:
        yield staging
        for path in staging.iterdir():
            ordinary_modes(path)
        names = sorted(p.name for p in staging.iterdir())
        if last in names:
            names.remove(last)
            names.append(last)
        for name in names:
            target = dest / name
            if target.is_dir() and not (staging / name).is_dir():
                shutil.rmtree(target)
            if (staging / name).is_dir() and target.exists():
                shutil.rmtree(target)
            os.replace(staging / name, target)  # atomic on one filesystem
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_json_atomic(path: Path, data) -> None:
    """Write JSON to a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        ordinary_modes(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
