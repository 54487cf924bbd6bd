"""Train a LoRA text classifier from a recipe.

    accelerate launch train.py --task agnews            # configs/agnews.yaml, Hub model and data
    python train.py --task sst2 --model_name_or_path ./my-model --dataset_name ../shared/data/glue
    python train.py --config my_recipe.yaml --learning_rate 3e-4 --dry_run

Any recipe key can be overridden as --key value; README.md lists them.
"""

import sys

from lorakit import allocator
from lorakit.errors import run_cli
from lorakit.recipe import parse_recipe


def main(argv: list[str]) -> int:
    resolved = parse_recipe(argv)
    if resolved.sweeps:
        from lorakit.sweep import run_sweep

        return run_sweep(resolved)
    from lorakit.training import run

    push = bool(resolved.training.get("push_to_hub"))
    if push:
        from lorakit.hub import check_push, push_run

        check_push(resolved)  # no token or repo id: fail now, not after training
    metrics = run(resolved)
    if metrics is not None and push:
        push_run(resolved)
    return 0


if __name__ == "__main__":
    allocator.reexec()  # before torch loads: LD_PRELOAD only takes at process start
    sys.exit(run_cli(main))
