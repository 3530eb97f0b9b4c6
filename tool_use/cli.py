"""`mage agent`: answer a request with a tool plan and execute it, offline.

MAGE reads the request (with the system prompt that lists the tools, as in stage-3 training), answers with a JSON
plan, the plan is validated (every problem named by step), and the executor runs it on the configured tools, writing
each step's output and a manifest to the output directory. Plans are data: nothing in them is executed as code, and
files they name must lie in the input directory (the --image file is staged there) or the output directory.

Examples:
  mage agent --model ckpt/stage3 "Draw a red circle to the left of a blue square, then describe the picture."
  mage agent --model ckpt/stage3 --image photo.png "Describe photo.png and read the description aloud." \\
      --tools tools.yaml --output-dir agent_out
  mage agent --model ckpt/stage3 --plan-only "Transcribe speech.wav and draw what it says."

Default tools: MAGE itself (image-text-to-text, image-to-text, visual-question-answering) and the ShapeWorld renderer
(text-to-image). Others (text-to-speech, ASR, translation, ...) come from a --tools YAML (see tool_use/registry.py);
a valid step whose tool is not configured fails by name and the steps that do not depend on it still run.
Exit code: 0 all steps ran, 1 some failed, 2 no valid plan.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from inference import generation
from inference.threads import add_threads_argument
from shapeworld.plan_schema import DEFAULT_TASKS, plan_to_text, tool_system_prompt

from .executor import execute_plan
from .registry import ToolRegistry, load_mage, mage_tool, registry_from_config, shapeworld_tool
from .schema import PlanParseError, extract_plan, validate_plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`mage agent` options (no heavy imports here)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("request", help="what you want done, in words")
    parser.add_argument("--model", required=True, help="MAGE checkpoint folder (save_pretrained)")
    parser.add_argument("--image", default=None, help="an image file the request may name (staged into the inputs)")
    parser.add_argument("--input-dir", default=None, help="a folder of user files the plan may name (read-only)")
    parser.add_argument(
        "--output-dir", default="mage_agent_output", help="artefacts + manifest.json (default: %(default)s)"
    )
    parser.add_argument("--tools", default=None, help="YAML tool config (model ids per task); see tool_use/registry.py")
    parser.add_argument("--no-default-tools", action="store_true", help="only the tools of --tools")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="plan length budget (default %(default)s)")
    parser.add_argument("--step-timeout", type=float, default=120.0, help="seconds per step (default %(default)s)")
    parser.add_argument("--max-steps", type=int, default=16, help="refuse longer plans (default %(default)s)")
    parser.add_argument(
        "--max-workers", type=int, default=2, help="independent steps run at once (default %(default)s)"
    )
    parser.add_argument("--plan-only", action="store_true", help="print and validate the plan, run nothing")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON instead of a summary")
    add_threads_argument(parser)


def build_registry(args: argparse.Namespace, model, processor, configured=None):
    """Default tools (MAGE in memory + ShapeWorld) overlaid by the --tools YAML (`configured`: that YAML's registry,
    already read; read here when `None`)."""
    registry = ToolRegistry()
    if not args.no_default_tools:
        registry.add(shapeworld_tool())
        for task in ("image-text-to-text", "image-to-text", "visual-question-answering"):
            registry.add(mage_tool(model_and_processor=(model, processor), task=task))
    if configured is None and args.tools:
        configured = registry_from_config(args.tools)
    if configured is not None:
        registry.update(configured)
    return registry


def _error(message: str) -> int:
    print(f"mage agent: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        return _error(f"--model {model_dir} is not a checkpoint folder (no config.json)")
    try:  # the tool config is read (and its local models checked) before the model loads and plans
        configured = registry_from_config(args.tools) if args.tools else None
    except ValueError as error:
        return _error(str(error))
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    input_dirs = [Path(args.input_dir)] if args.input_dir else []
    if args.image:
        image = Path(args.image)
        if not image.is_file():
            return _error(f"--image {image} does not exist")
        staged = out_dir / "inputs"
        staged.mkdir(exist_ok=True)
        shutil.copyfile(image, staged / image.name)
        input_dirs.insert(0, staged)

    import torch  # heavy

    torch.set_num_threads(args.threads)
    model, processor = load_mage(model_dir)
    raw = generation.generate_text(
        model, processor, args.request, system=tool_system_prompt(), max_new_tokens=args.max_new_tokens
    )
    print(f"model output: {raw[:500]}{'...' if len(raw) > 500 else ''}")
    try:
        plan = extract_plan(raw)
    except PlanParseError as e:
        print(f"no plan: {e}", file=sys.stderr)
        (out_dir / "manifest.json").write_text(
            json.dumps({"request": args.request, "status": "unparsable", "model_output": raw}, indent=2),
            encoding="utf-8",
        )
        return 2
    print(f"plan: {plan_to_text(plan)}")
    if args.plan_only:
        errors = validate_plan(plan, DEFAULT_TASKS)
        for e in errors:
            print(f"invalid plan: {e}")
        return 2 if errors else 0
    registry = build_registry(args, model, processor, configured)
    result = execute_plan(
        plan,
        registry,
        output_dir=out_dir,
        input_dir=input_dirs,
        step_timeout=args.step_timeout,
        max_steps=args.max_steps,
        max_workers=args.max_workers,
        request=args.request,
        tasks={**DEFAULT_TASKS, **registry.tasks},
    )
    if args.json:
        print(result.manifest_path.read_text(encoding="utf-8"))
    else:
        print(result.summary())
    return {"ok": 0, "partial": 1, "failed": 1}.get(result.status, 2)


__all__ = ["add_arguments", "build_registry", "run"]
