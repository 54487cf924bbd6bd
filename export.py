"""Export an adapter as a plain transformers model, or as ONNX: LoRA folded into the weights, no PEFT needed.

    python export.py --adapter outputs/sst2 --output_dir exports/sst2
    python export.py --adapter user/roberta-base-lora-sst2 --output_dir exports/sst2
    python export.py --adapter outputs/sst2 --format onnx --output_dir exports/sst2-onnx
    python export.py --adapter outputs/sst2 --format onnx --quantize int8 --output_dir exports/sst2-int8

The merged folder (default) holds config.json (with the label names), model.safetensors (head included), the
tokenizer and labels.json; load it with `AutoModelForSequenceClassification.from_pretrained(folder)`, with
`pipeline("text-classification", model=folder)`, or with `python infer.py --adapter folder`.

--format onnx writes model.onnx (dynamic batch and sequence axes; --quantize int8: int8 weights), tokenizer.json,
labels.json and a README; `python infer.py --adapter folder` runs it with onnxruntime, without torch, as does
`lorakit.onnx.OnnxClassifier.load(folder)`.
"""

import argparse
import sys
from pathlib import Path

from lorakit.errors import ArgumentParser, UsageError, run_cli


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="export.py", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", help="output folder of train.py or Hub repo id (default: the latest run "
                                          "under ./outputs)")
    parser.add_argument("--output_dir", type=Path, required=True, help="folder to write (new or empty)")
    parser.add_argument("--base_model", help="backbone to merge into, instead of the one the adapter names")
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    parser.add_argument("--format", default="merged", choices=["merged", "onnx"],
                        help="merged: a transformers model folder (default); onnx: model.onnx for onnxruntime")
    parser.add_argument("--quantize", choices=["int8"], help="with --format onnx: int8 weights (dynamic quantisation)")
    args = parser.parse_args(argv)
    if args.quantize and args.format != "onnx":
        raise UsageError(f"--quantize {args.quantize} applies to --format onnx only; add --format onnx")

    if args.format == "onnx":
        from lorakit.onnx_export import export_onnx

        done = export_onnx(args.adapter, args.output_dir, base_model=args.base_model, quantize=args.quantize,
                           overwrite=args.overwrite)
        size = f"{done.bytes / 1e6:.1f} MB" + (f" in int8 (fp32: {done.fp32_bytes / 1e6:.1f} MB)" if done.quantize
                                                else "")
        print(f"exported ONNX to {done.path} (model.onnx {size}; largest probability difference from torch on the "
              f"check texts {done.max_prob_diff:.2g}); run it with python infer.py --adapter {done.path}")
        return 0

    from lorakit.inference import export_merged

    dest = export_merged(args.adapter, args.output_dir, base_model=args.base_model, overwrite=args.overwrite)
    print(f"exported a merged model to {dest}; load it with "
          f"pipeline('text-classification', model={str(dest)!r}) or python infer.py --adapter {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
