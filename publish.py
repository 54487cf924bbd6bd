"""Publish a finished run of train.py on the Hugging Face Hub, with a model card, without training again.

    python publish.py --output_dir outputs/sst2 --hub_model_id user/roberta-base-lora-sst2
    python publish.py --output_dir outputs/sst2 --hub_private --base_model FacebookAI/roberta-base
    python publish.py --output_dir outputs/sst2 --dry_run staged/    # write the upload into staged/, no network

--output_dir (required) is the run; --dry_run FOLDER is a new or empty folder that receives exactly what the Hub
repo would get. The token comes from HF_TOKEN or `hf auth login`; it is never written anywhere. --hub_model_id and --hub_private
default to the run's recipe. --base_model and --dataset name the Hub ids of a backbone or dataset the run read
from a local folder, for the card's metadata and for adapter_config.json.
"""

import argparse
import sys
from pathlib import Path

from lorakit.errors import ArgumentParser, UsageError, run_cli


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="publish.py", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, required=True, help="the output folder of a finished train.py run (required)")
    parser.add_argument("--hub_model_id", help="Hub repo to create or update, user/name (default: the recipe's)")
    parser.add_argument("--hub_private", action="store_true", help="make the repo private (default: the recipe's)")
    parser.add_argument("--base_model", help="Hub id of the backbone, when the run read it from a local folder "
                                             "(without it the card names no base model)")
    parser.add_argument("--dataset", help="Hub id of the dataset, when the run read it from a local folder")
    parser.add_argument("--dry_run", type=Path, metavar="FOLDER",
                        help="write the folder that would be uploaded to FOLDER (new or empty) and upload nothing")
    args = parser.parse_args(argv)

    from lorakit import hub

    run = hub.read_run(args.output_dir)
    repo_id = args.hub_model_id or run.recipe.get("hub_model_id")
    if not repo_id:
        raise UsageError(f"no Hub repo named: pass --hub_model_id user/name (the recipe of {str(args.output_dir)!r} "
                         "sets no hub_model_id)")
    if args.dry_run:
        files = hub.dry_run(args.output_dir, args.dry_run, repo_id=repo_id, base_model=args.base_model,
                            dataset=args.dataset)
        print(f"dry run: {args.dry_run} holds what {repo_id} would get ({', '.join(files)}); nothing uploaded")
        return 0
    url = hub.push(args.output_dir, repo_id, private=args.hub_private or bool(run.recipe.get("hub_private")),
                   base_model=args.base_model, dataset=args.dataset)
    print(f"published {args.output_dir} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
