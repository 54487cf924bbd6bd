"""Texts in, predictions out, for infer.py: arguments, files (plain lines, CSV, JSON Lines) and standard input,
streamed line by line with bad lines (undecodable, empty, malformed) reported by number, never dropped silently."""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Sequence

from .errors import UsageError


@dataclass
class Row:
    """One input: a text, its second sentence for pair tasks, and its line number in the input (if any)."""

    text: str
    pair: str | None = None
    line: int | None = None


def check_rows(rows: Sequence[Row], *, pair: bool, source: str) -> None:
    """UsageError for an empty text, or a pair given to a single-text adapter (or the reverse)."""
    for i, row in enumerate(rows):
        where = f"line {row.line}" if row.line is not None else f"text {i + 1}"
        if not row.text.strip() or (row.pair is not None and not row.pair.strip()):
            raise UsageError(f"{where} is empty; pass non-empty text")
        if pair and row.pair is None:
            raise UsageError(f"{where} is one sentence but the adapter {source!r} classifies sentence pairs; "
                             "give the second one with --pair, or as tab-separated lines")
        if not pair and row.pair is not None:
            raise UsageError(f"{where} is a sentence pair but the adapter {source!r} classifies single texts; "
                             "drop --pair")


class BadLines:
    """Bad input lines (undecodable, empty, malformed): fatal by default, or skipped and each one reported."""

    def __init__(self, source: str, skip: bool, report=None):
        self.source = source
        self.skip = skip
        self.report = report or (lambda message: print(f"warning: {message}", file=sys.stderr))
        self.skipped = 0

    def __call__(self, line: int, why: str) -> None:
        if not self.skip:
            raise UsageError(f"{self.source} line {line} {why}; fix it, or pass --skip_bad_lines to skip such lines")
        self.skipped += 1
        self.report(f"{self.source} line {line} {why}: skipped")


def _decoded(stream: IO[bytes], bad: BadLines) -> Iterator[tuple[int, str]]:
    """(line number, text without its line break) for each line that is valid UTF-8; the others go to `bad`."""
    for number, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            bad(number, f"is not UTF-8 ({err.reason} at byte {err.start}; re-save the file as UTF-8)")
            continue
        yield number, text.rstrip("\r\n")


def _column_names(available: list[str], wanted: list[str] | None, defaults: list[str], pair: bool,
                  source: str) -> list[str]:
    arity = 2 if pair else 1
    if wanted:
        names = wanted
    elif all(c in available for c in defaults[:arity]):
        names = defaults[:arity]
    elif len(available) == arity:
        names = available
    else:
        raise UsageError(f"{source} has columns {', '.join(available)}; name the text column"
                         f"{'s' if pair else ''} with --column {','.join(defaults[:arity])}")
    if len(names) != arity:
        raise UsageError(f"--column names {len(names)} column(s) but the adapter needs {arity}; "
                         f"pass --column {','.join(defaults[:arity])}")
    missing = [c for c in names if c not in available]
    if missing:
        raise UsageError(f"column {missing[0]!r} not found in {source} (columns: {', '.join(available)}); "
                         "pass --column with one of them")
    return names


def _row(values: list, number: int, bad: BadLines) -> Row | None:
    if any(not isinstance(v, str) for v in values):
        bad(number, "holds a value that is not text")
        return None
    if any(not v.strip() for v in values):
        bad(number, "is empty")
        return None
    return Row(values[0], values[1] if len(values) == 2 else None, number)


def read_rows(stream: IO[bytes], source: str, fmt: str, *, pair: bool, columns: list[str] | None,
              default_columns: list[str], bad: BadLines) -> Iterator[Row]:
    """Rows from a binary stream: fmt 'text' (a line per text; a tab between the sentences of a pair), 'csv'
    (header row) or 'jsonl' (an object per line); texts come from `columns`, else the adapter's own columns."""
    lines = _decoded(stream, bad)
    if fmt == "text":
        for number, text in lines:
            values = text.split("\t", 1) if pair else [text]
            if pair and len(values) != 2:
                bad(number, "has no tab between the two sentences")
                continue
            row = _row(values, number, bad)
            if row:
                yield row
    elif fmt == "csv":
        numbers = []

        def texts():
            for number, text in lines:
                numbers.append(number)
                yield text + "\n"  # keeps line breaks inside quoted fields

        reader = csv.reader(texts())
        header = next(reader, None)
        if header is None:
            return
        names = _column_names(header, columns, default_columns, pair, source)
        index = [header.index(c) for c in names]
        numbers.clear()
        for record in reader:
            number = numbers[0]  # a quoted field may span lines: the record starts on the first
            numbers.clear()
            if not record:
                bad(number, "is empty")
                continue
            if len(record) != len(header):
                bad(number, f"has {len(record)} fields, the header {len(header)}")
                continue
            row = _row([record[i] for i in index], number, bad)
            if row:
                yield row
    else:
        names = None
        for number, text in lines:
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                bad(number, "is empty" if not text.strip() else "is not a JSON object")
                continue
            if names is None:
                names = _column_names(list(record), columns, default_columns, pair, source)
            if any(c not in record for c in names):
                bad(number, f"has no {'/'.join(c for c in names if c not in record)} field")
                continue
            row = _row([record[c] for c in names], number, bad)
            if row:
                yield row


def file_format(path: Path) -> str:
    return {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}.get(path.suffix.lower(), "text")


def scan_file(path: Path, *, pair: bool, columns: list[str] | None, default_columns: list[str],
              skip_bad: bool) -> int:
    """Read the whole file once before any model is loaded: the number of good rows (for the progress bar).

    A bad line is a UsageError here unless `skip_bad` (then it is reported when the rows are read for real);
    so is a missing, unreadable or empty file."""
    if not path.is_file():
        raise UsageError(f"input file {str(path)!r} not found; pass an existing file with --file")
    quiet = BadLines(f"input file {str(path)!r}", skip_bad, report=lambda message: None)
    try:
        with path.open("rb") as stream:
            count = sum(1 for _ in read_rows(stream, f"input file {str(path)!r}", file_format(path), pair=pair,
                                             columns=columns, default_columns=default_columns, bad=quiet))
    except OSError as err:
        raise UsageError(f"input file {str(path)!r} could not be read ({err.strerror}); check the path") from None
    if count == 0:
        raise UsageError(f"input file {str(path)!r} holds no text"
                         f"{f' ({quiet.skipped} bad lines skipped)' if quiet.skipped else ''}; pass a file with one "
                         "text per line, or a CSV/JSONL file with a text column")
    return count


def stdin_rows(pair: bool, bad: BadLines) -> Iterator[Row]:
    """Plain lines from standard input (a tab between the sentences of a pair), streamed."""
    stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else io.BytesIO(sys.stdin.read().encode())
    return read_rows(stream, "standard input", "text", pair=pair, columns=None, default_columns=[], bad=bad)
