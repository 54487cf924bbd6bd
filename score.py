"""Score a trained adapter on labelled rows without training: metrics, per-class report, predictions, plot.

    python score.py --adapter outputs/sst2 --file reviews.csv --label_column_name label --output_dir scores/reviews
    python score.py --adapter outputs/agnews --dataset_name fancyzhx/ag_news --split test --output_dir scores/agnews
    python score.py --adapter user/roberta-base-lora-mrpc --dataset_name nyu-mll/glue --dataset_config_name mrpc \\
        --split validation --output_dir scores/mrpc

Writes metrics.json (test_<metric>, test_report, test_confusion_matrix), predictions_test.csv,
classification_report_test.md and confusion_matrix_test.png into --output_dir, never into the adapter's folder:
the same files and numbers as the test step of train.py (test_split / test_file) on the same rows.
"""

import argparse
import sys
from pathlib import Path

from lorakit.errors import ArgumentParser, UsageError, run_cli


def parse_args(argv: list[str]):
    parser = ArgumentParser(prog="score.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, help="output folder of train.py, Hub repo id or merged export")
    parser.add_argument("--base_model", help="backbone to load the adapter on, instead of the one it names")
    parser.add_argument("--file", "--test_file", dest="file", help="labelled rows: .csv, .json/.jsonl or .parquet")
    parser.add_argument("--dataset_name", help="or a Hub dataset id / local folder laid out like one")
    parser.add_argument("--dataset_config_name", help="its configuration, e.g. sst2 for nyu-mll/glue")
    parser.add_argument("--split", "--test_split", dest="split", default="test",
                        help="split of --dataset_name to score (default test)")
    parser.add_argument("--label_column_name", default="label", help="column holding the gold label (default label)")
    parser.add_argument("--text_column_names", help="text column(s), comma-separated for pairs (default: the "
                                                    "columns the adapter was trained on)")
    parser.add_argument("--metrics", help="comma-separated; default: the adapter's recipe's, else accuracy,f1_macro")
    parser.add_argument("--max_samples", "--max_test_samples", dest="max_samples", type=int,
                        help="score the first N rows only")
    parser.add_argument("--output_dir", required=True, type=Path, help="folder for the results (new or empty)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --output_dir")
    parser.add_argument("--batch_size", type=int, default=64, help="rows per forward pass (default 64)")
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"],
                        help="fp32 (default) scores as training evaluates on CPU; auto: bf16 where native")
    args = parser.parse_args(argv)
    if bool(args.file) == bool(args.dataset_name):
        raise UsageError("pass the labelled rows as --file PATH or as --dataset_name NAME --split SPLIT (one of them)")
    if args.max_samples is not None and args.max_samples < 1:
        raise UsageError(f"--max_samples should be 1 or more but the value passed is {args.max_samples}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from lorakit.evaluation import score_adapter  # after the arguments: --help and bad flags load no torch

    data = {"label_column_name": args.label_column_name, "max_test_samples": args.max_samples}
    if args.file:
        data["test_file"] = args.file
    else:
        data.update(dataset_name=args.dataset_name, dataset_config_name=args.dataset_config_name,
                    test_split=args.split)
    if args.text_column_names:
        data["text_column_names"] = [c.strip() for c in args.text_column_names.split(",")]
    metrics = score_adapter(args.adapter, args.output_dir, data=data,
                            metrics=args.metrics.split(",") if args.metrics else None, base_model=args.base_model,
                            precision=args.precision, batch_size=args.batch_size, overwrite=args.overwrite)
    figures = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                        if k.startswith("test_") and isinstance(v, float))
    print(f"{metrics['test_rows']} rows of {metrics['data']}: {figures}; files in {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
