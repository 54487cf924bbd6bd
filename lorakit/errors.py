"""One error type for everything a user can fix, and the CLI wrapper that turns it into one line and exit 2."""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable


class UsageError(ValueError):
    """A problem with the user's input: the message names the bad value and the fix, in one sentence."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the kit's scripts: a bad flag is a UsageError too (one line through run_cli, exit 2)."""

    def error(self, message: str):
        raise UsageError(f"{message}; see {self.prog} --help")


def quiet_libraries() -> None:
    """Silence library messages that are noise for every run of the kit's scripts (process-wide: entry scripts only)."""
    import logging
    import warnings

    # bitsandbytes warns at import on AVX-512-BF16 CPUs that it cannot fetch an optional kernel from the Hub;
    # it falls back to its own kernel, so the warning is noise for every run that does not even quantise.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # PEFT 0.21 still calls a transformers attribute that 5.x renamed; the warning is for PEFT, not our users.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def run_cli(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> int:
    """Run an entry script's `main(argv)` with the libraries quieted (`quiet_libraries`); a UsageError becomes
    `error: <message>` on stderr and exit code 2, no traceback.

    `--debug` anywhere in argv shows the traceback as well, and the libraries' own reports (the `lorakit` logger
    at DEBUG); it is removed before `main` sees it.
    """
    import logging

    quiet_libraries()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
        logging.getLogger("lorakit").setLevel(logging.DEBUG)
    try:
        return main(argv) or 0
    except UsageError as err:
        if debug:
            traceback.print_exc()
        message = " ".join(str(err).split())  # one line, whatever the source wrapped
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; rerun with --resume_from_checkpoint latest to continue", file=sys.stderr)
        return 130
