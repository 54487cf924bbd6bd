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


def run_cli(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> int:
    """Run `main(argv)`; a UsageError becomes `error: <message>` on stderr and exit code 2, no traceback.

    `--debug` anywhere in argv shows the traceback as well (and is removed before `main` sees it).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
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
