"""Train MAGE from a YAML recipe (stage 1: IAN only, stage 2: IAN + LLM, stage 3: tool use + replay).

Examples:
  mage train --recipe stage1_tiny --model tiny_mage/ --data captions.json --output-dir runs/stage1
  mage train --recipe training/recipes/stage2_7b.yaml --model runs/stage1 --data llava_665k.json \\
      --output-dir runs/stage2 --set image_folder=/data/images --set per_device_train_batch_size=8
  mage train --recipe stage2_tiny ... --output-dir runs/stage2 --resume      # continue from the last checkpoint
  mage train --recipe stage2_tiny ... --lora                                   # LoRA on the LLM, projector full
  accelerate launch --config_file training/accelerate_configs/zero3.yaml -m mage_cli.main train --recipe ...

Recipes: a path or a bundled name (stage{1,2,3}_{7b,13b,tiny}); any field can be overridden with --set key=value.
"""

from __future__ import annotations

import argparse
import json
import sys

from inference.threads import add_threads_argument, torch_threads

from .checkpoint import ModelError
from .recipes import RecipeError, load_recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--recipe", required=True, help="recipe YAML path or bundled name, e.g. stage2_tiny")
    parser.add_argument("--model", required=True, help="MAGE checkpoint folder to start from")
    parser.add_argument("--data", required=True, help="LLaVA-format .json / .jsonl (images relative to its folder)")
    parser.add_argument("--output-dir", required=True, help="checkpoints and the final model go here")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field (repeatable), e.g. --set learning_rate=1e-3",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="allow a non-empty --output-dir: its checkpoints are deleted, its model replaced once the "
        "new one is saved (without this flag such a folder is refused and nothing is written)",
    )
    adapters = parser.add_mutually_exclusive_group()
    adapters.add_argument("--lora", action="store_true", help="LoRA on the LLM (projector fully trained)")
    adapters.add_argument("--qlora", action="store_true", help="as --lora on a 4-bit LLM (bitsandbytes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    with torch_threads(args.threads):
        try:
            return _run(args)
        finally:
            _end_process_group()


def _end_process_group() -> None:
    """Under `accelerate launch` / `torchrun` the Trainer started a process group: tear it down before the process
    exits, as PyTorch asks, rather than leave each rank's backend threads to process exit."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _run(args: argparse.Namespace) -> int:
    from .api import train  # heavy
    from .data import DataError  # heavy

    try:
        recipe = load_recipe(args.recipe, args.overrides)
        mode = "qlora" if args.qlora else "lora" if args.lora else "full"
        output = train(
            recipe,
            args.model,
            args.data,
            args.output_dir,
            resume=args.resume,
            mode=mode,
            disable_tqdm=args.no_progress,
            overwrite=args.overwrite,
        )
    except (RecipeError, DataError, ModelError, FileNotFoundError, FileExistsError) as error:
        print(f"mage train: error: {error}", file=sys.stderr)
        return 2
    _print_summary(output)
    return 0


def _print_summary(output) -> None:
    from .api import REPORT_FILE  # heavy

    path = output / REPORT_FILE
    if not path.is_file():
        return
    report = json.loads(path.read_text(encoding="utf-8"))
    first, last = report.get("first_log") or {}, report.get("last_log") or {}
    print(f"Final checkpoint: {output}")
    if last:
        print(f"ITG  {first.get('itg_loss', float('nan')):.4f} → {last['itg_loss']:.4f}")
        print(f"ITDM {first.get('itdm_loss', float('nan')):.4f} → {last['itdm_loss']:.4f}")
        for key in sorted(k for k in last if k.endswith("_loss") and k not in ("itg_loss", "itdm_loss")):
            name = key.removesuffix("_loss").upper()  # an objective's term, e.g. SEA
            print(f"{name:<4} {first.get(key, float('nan')):.4f} → {last[key]:.4f}")
    print(f"Samples: {report['num_samples']}; skipped: {report['skipped_report']}")
