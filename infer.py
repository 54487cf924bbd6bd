"""Classify texts with a trained adapter: an output folder of train.py, a Hub repo id, a merged or an ONNX export.

    python infer.py "a gripping, beautifully acted film"        # the latest run under ./outputs
    python infer.py --adapter outputs/sst2 "great fun" "dull" --top_k 2
    python infer.py --adapter user/roberta-base-lora-sst2 --file reviews.csv --column review --json > out.jsonl
    cat headlines.txt | python infer.py --adapter outputs/agnews
    python infer.py --adapter outputs/mrpc "The cat sat." --pair "A cat was sitting."
    python infer.py --adapter exports/sst2-onnx "great fun"    # export.py --format onnx: onnxruntime, no torch

Prints label<TAB>probability<TAB>text per input (or JSON Lines with --json), in input order; for a multi-label
adapter every label over the threshold with its probability, for a regression score<TAB>text.
"""

import time

_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from lorakit import predictions, textio  # noqa: E402
from lorakit.errors import ArgumentParser, UsageError, run_cli  # noqa: E402
from lorakit.runfolder import MULTI_LABEL, REGRESSION, is_onnx_export  # noqa: E402

PROGRESS_FROM = 1000  # rows; fewer finish before a bar would tell anyone anything


def parse_args(argv: list[str]):
    parser = ArgumentParser(prog="infer.py", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", help="texts to classify; none: --file, or lines on standard input")
    parser.add_argument("--adapter", help="output folder of train.py, Hub repo id, merged or ONNX export "
                                          "(default: the latest run under ./outputs)")
    parser.add_argument("--base_model", help="backbone to load the adapter on, instead of the one it names "
                                             "(a local copy, or a Hub id)")
    parser.add_argument("--pair", action="append", metavar="TEXT",
                        help="second sentence for a pair adapter (MRPC, RTE), once per text")
    parser.add_argument("--file", type=Path, help="input file: one text per line (a tab between the sentences "
                                                  "of a pair), or .csv / .jsonl with a text column")
    parser.add_argument("--column", help="text column(s) of a .csv/.jsonl file, comma-separated for pairs "
                                         "(default: the columns the adapter was trained on)")
    parser.add_argument("--top_k", type=int, help="show the k most probable labels")
    parser.add_argument("--threshold", type=float,
                        help="multi-label adapters: show the labels whose probability exceeds this (default: the "
                             "threshold in the adapter's labels.json, 0.5 unless the recipe set it)")
    parser.add_argument("--json", action="store_true",
                        help="JSON Lines: text, label, score, scores (every label), line (for files); multi-label: "
                             "labels (a list of label, score) and scores; regression: score")
    parser.add_argument("--batch_size", type=int, default=64, help="texts per forward pass (default 64)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                        help="auto (default): bf16 where the CPU (AVX-512-BF16, AMX) or GPU has it natively, else "
                             "fp32; not for an ONNX export, which runs as exported")
    parser.add_argument("--skip_bad_lines", action="store_true",
                        help="skip (and report) undecodable or empty input lines instead of stopping")
    parser.add_argument("--timings", action="store_true", help="print where the time went on stderr")
    args = parser.parse_intermixed_args(argv)  # texts and their --pair may alternate
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise UsageError(f"--threshold should be between 0 and 1 (exclusive) but the value passed is {args.threshold}")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top_k should be 1 or more but the value passed is {args.top_k}")
    if args.texts and args.file:
        raise UsageError("pass texts as arguments or --file, not both")
    if args.pair and len(args.pair) != len(args.texts):
        raise UsageError(f"{len(args.texts)} texts but {len(args.pair)} --pair sentences; pass one --pair per text")
    return args


def open_folder(args):
    """The folder to predict with, checked, and a function that loads its classifier. An ONNX export runs on
    onnxruntime (lorakit.onnx): that process never imports torch or transformers. Anything else runs on torch
    (lorakit.inference)."""
    path = Path(args.adapter).expanduser() if args.adapter else None
    if path is not None and is_onnx_export(path):
        for flag, value in (("--base_model", args.base_model), ("--precision", args.precision)):
            if value:
                raise UsageError(f"{flag} does not apply to the ONNX export {args.adapter!r}, whose merged weights "
                                 f"and precision were fixed by export.py; drop {flag}")
        from lorakit.onnx import OnnxClassifier, read_export

        folder = read_export(path)
        return folder, lambda: OnnxClassifier.from_folder(folder, batch_size=args.batch_size)
    from lorakit import inference

    folder = inference.read_folder(inference.resolve_adapter(args.adapter), args.base_model)
    if args.adapter is None:
        print(f"using the latest run {str(folder.path)!r} (pass --adapter to choose another)", file=sys.stderr)
    return folder, lambda: inference.Classifier.from_folder(folder, precision=args.precision or "auto",
                                                            batch_size=args.batch_size)


def rows_and_total(args, folder, bad: textio.BadLines):
    """The input rows (an iterator) and their count when known before reading (for the progress bar)."""
    columns = args.column.split(",") if args.column else None
    if args.texts:
        rows = [textio.Row(t, args.pair[i] if args.pair else None) for i, t in enumerate(args.texts)]
        textio.check_rows(rows, pair=folder.is_pair, source=str(folder.path))
        return iter(rows), len(rows)
    if args.file:
        total = textio.scan_file(args.file, pair=folder.is_pair, columns=columns,
                                 default_columns=folder.text_columns, skip_bad=args.skip_bad_lines)

        def rows():
            with args.file.open("rb") as stream:
                yield from textio.read_rows(stream, bad.source, textio.file_format(args.file),
                                            pair=folder.is_pair, columns=columns,
                                            default_columns=folder.text_columns, bad=bad)

        return rows(), total
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("no input; pass texts as arguments, --file PATH, or pipe lines on standard input")
    return textio.stdin_rows(folder.is_pair, bad), None


def check_options(args, classifier) -> None:
    """--threshold and --top_k against the problem type the model was trained for; sets the threshold."""
    if args.threshold is not None:
        if classifier.problem_type != MULTI_LABEL:
            raise UsageError(f"--threshold applies to multi-label adapters, but {classifier.source!r} is "
                             f"{classifier.problem_type}; drop --threshold")
        classifier.threshold = args.threshold
    if args.top_k and classifier.problem_type == REGRESSION:
        raise UsageError(f"--top_k ranks labels, but {classifier.source!r} is a regression (it prints a score); "
                         "drop --top_k")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    imported = time.perf_counter()
    folder, load = open_folder(args)
    bad = textio.BadLines(f"input file {str(args.file)!r}" if args.file else "standard input", args.skip_bad_lines)
    rows, total = rows_and_total(args, folder, bad)
    classifier = load()
    check_options(args, classifier)
    loaded = time.perf_counter()

    from tqdm import tqdm

    top_k = min(args.top_k, len(classifier.label_names)) if args.top_k else None
    count = 0
    with tqdm(total=total, unit="texts", desc="classifying", file=sys.stderr, dynamic_ncols=True,
              disable=not args.file or total < PROGRESS_FROM) as bar:
        for prediction in classifier.predict_stream(rows, progress=bar):
            if args.json:
                line = json.dumps(prediction.as_record(top_k), ensure_ascii=False)
            else:
                line = predictions.format_line(prediction, top_k)
            sys.stdout.write(line + "\n")
            count += 1
    sys.stdout.flush()
    if count == 0:
        raise UsageError(f"{bad.source} holds no text; pipe one text per line, or pass texts as arguments")
    if classifier.truncated:
        print(f"warning: {classifier.truncated} of {count} texts were longer than {classifier.max_length} tokens "
              "and were truncated", file=sys.stderr)
    if bad.skipped:
        print(f"warning: {bad.skipped} bad lines of {bad.source} skipped (reported above)", file=sys.stderr)
    if args.timings:
        done = time.perf_counter()
        print(f"timings: imports {imported - _START:.2f} s, loading {loaded - imported:.2f} s, "
              f"prediction {done - loaded:.2f} s for {count} texts", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(run_cli(main))
    except BrokenPipeError:  # `infer.py ... | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        sys.exit(0)
