"""Merge a LoRA adapter (from `mage train --lora`) into a plain MAGE checkpoint that loads through the Auto classes.

Example:
  mage merge-lora --adapter runs/stage2_lora --output-dir runs/stage2_merged [--base runs/stage1]
"""

from __future__ import annotations

import argparse
import sys

from .checkpoint import ModelError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--adapter", required=True, help="folder holding adapter_config.json (mage train --lora)")
    parser.add_argument("--output-dir", required=True, help="where the merged MAGE checkpoint is written")
    parser.add_argument(
        "--base", default=None, help="base MAGE folder (default: the adapter's base_model_name_or_path)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace what a non-empty --output-dir holds")


def run(args: argparse.Namespace) -> int:
    from .lora import merge_lora  # heavy

    try:
        output = merge_lora(args.adapter, args.output_dir, base_model=args.base, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ModelError) as error:
        print(f"mage merge-lora: error: {error}", file=sys.stderr)
        return 2
    print(f"Merged checkpoint: {output}")
    return 0
