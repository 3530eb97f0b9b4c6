"""`mage` — one console script, sub-commands owned by the package that implements them.

Each sub-command lives in its own module that exposes two functions:

- ``add_arguments(parser: argparse.ArgumentParser) -> None`` (cheap: no torch/transformers imports), and
- ``run(args: argparse.Namespace) -> int`` (does the work; heavy imports go here).

A sub-command whose module is not installed yet is listed with a clear message instead of breaking the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("mage_cli.demo", "build, run, save and reload a tiny MAGE end to end, offline"),
    "data": ("shapeworld.cli", "generate the embedded ShapeWorld data set"),
    "train": ("training.cli", "train MAGE (stage 1/2/3) from a YAML recipe"),
    "merge-lora": ("training.merge_cli", "merge a LoRA adapter into a plain MAGE checkpoint"),
    "eval": ("evaluation.cli", "evaluate on MME / POPE / MMBench / SEED-Bench / plans"),
    "agent": ("tool_use.cli", "answer a request with a tool plan and execute it"),
    "convert": ("mage_cli.convert", "build or convert checkpoints (CLIP+LLM init, llava-hf)"),
    "push": ("mage_cli.push", "publish a checkpoint to the Hugging Face Hub"),
    "ablate": ("alignment.ablate", "projector × objective ablation on ShapeWorld (the paper's Table 4)"),
    "serve": ("mage_cli.serve", "a web chat and an OpenAI-compatible API for a checkpoint"),
}

# command -> modules imported before it runs, for what they register with the packages below them: recipes of
# `mage train` may name an alignment objective (`--set alignment_objective=sea`), which training/ looks up in its
# registry (`training.recipes.register_alignment_objective`) without importing alignment/, the package above it that
# implements SEA. Imported when the command runs, not when `mage` lists its sub-commands: they load torch.
PLUGINS: dict[str, tuple[str, ...]] = {"train": ("alignment.recipe",)}


def _load(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mage", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = _load(module_name)
        if module is None:
            sub = subparsers.add_parser(name, help=f"{help_text} (not available in this build)")
            sub.set_defaults(_module=None, _module_name=module_name)
            continue
        sub = subparsers.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(sub)
        sub.set_defaults(_module=module, _module_name=module_name)
    return parser


class _DropOptionalKernelNotice:
    """A logging filter for the notice bitsandbytes (installed with the `quant` extra) logs on import when its
    optional CPU 4-bit kernel cannot be fetched (offline), and the Hub-offline notice of `kernels` on the way. peft
    imports bitsandbytes whenever it is installed, so every command that imports transformers' Trainer printed it,
    although nothing is quantised; it is kept for `--qlora`, the one command where 4-bit kernels run."""

    NOTICES = ("Failed to load CPU gemm_4bit_forward", "Skipping publisher trust check")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOTICES)


def _quiet_unused_quantisation_notices(argv: list[str]) -> None:
    if "--qlora" in argv:
        return
    for name in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub"):
        logging.getLogger(name).addFilter(_DropOptionalKernelNotice())


def main(argv: list[str] | None = None) -> int:
    _quiet_unused_quantisation_notices(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args._module is None:
        print(f"mage {args.command}: {args._module_name} is not part of this build yet.", file=sys.stderr)
        return 2
    load_plugins(args.command)
    return int(args._module.run(args) or 0)


def load_plugins(command: str) -> None:
    """Imports `PLUGINS[command]` (what they register with the packages below them); also for code that runs the
    command's library path in-process, as `mage demo` runs `mage train`'s."""
    for plugin in PLUGINS.get(command, ()):
        _load(plugin)


if __name__ == "__main__":
    sys.exit(main())
