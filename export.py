"""Export an adapter as a plain transformers model: LoRA folded into the weights, no PEFT needed to load it.

    python export.py --adapter outputs/sst2 --output_dir exports/sst2
    python export.py --adapter user/roberta-base-lora-sst2 --output_dir exports/sst2

The folder holds config.json (with the label names), model.safetensors (head included), the tokenizer and
labels.json; load it with `AutoModelForSequenceClassification.from_pretrained(folder)`, with
`pipeline("text-classification", model=folder)`, or with `python infer.py --adapter folder`.
"""

import argparse
import sys
from pathlib import Path

from lorakit.errors import ArgumentParser, run_cli


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="export.py", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", help="output folder of train.py or Hub repo id (default: the latest run "
                                          "under ./outputs)")
    parser.add_argument("--output_dir", type=Path, required=True, help="folder to write (new or empty)")
    parser.add_argument("--base_model", help="backbone to merge into, instead of the one the adapter names")
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    args = parser.parse_args(argv)

    from lorakit.inference import export_merged

    dest = export_merged(args.adapter, args.output_dir, base_model=args.base_model, overwrite=args.overwrite)
    print(f"exported a merged model to {dest}; load it with "
          f"pipeline('text-classification', model={str(dest)!r}) or python infer.py --adapter {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
