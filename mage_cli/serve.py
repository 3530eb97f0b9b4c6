"""`mage serve`: a web chat and an OpenAI-compatible API for a MAGE checkpoint, in one process.

Serves, on one port:
  /                      the web chat (Gradio): image + several turns, streamed answers, an agent tab
  POST /v1/chat/completions   OpenAI-compatible (image_url parts as data URLs or paths under --image-dir; stream=true)
  GET  /v1/models, GET /health

Requests that arrive together run as one left-padded batch (up to --max-batch); when --max-queue requests wait,
new ones get HTTP 429. Bad input is an HTTP 4xx with a JSON error, never a dead server.

Examples:
  mage serve --model ckpt/stage3
  mage serve --model ckpt/stage3 --host 0.0.0.0 --port 8000 --image-dir ~/pictures --max-batch 4
  curl http://127.0.0.1:7860/v1/chat/completions -H 'Content-Type: application/json' \\
      -d '{"model": "mage", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32}'
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from inference.threads import add_threads_argument
from tool_use.registry import load_mage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`mage serve` options (no heavy imports here)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", required=True, help="MAGE checkpoint folder (save_pretrained) or Hub id")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine only)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default %(default)s; 0 picks a free one)")
    parser.add_argument("--device", default="cpu", help="torch device for the model (default %(default)s)")
    add_threads_argument(parser)
    parser.add_argument("--max-batch", type=int, default=8, help="requests run together at most (default %(default)s)")
    parser.add_argument(
        "--max-queue", type=int, default=64, help="requests waiting at most; more get HTTP 429 (default %(default)s)"
    )
    parser.add_argument(
        "--batch-window",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="how long the first request waits for others to batch with (default %(default)s)",
    )
    parser.add_argument(
        "--max-images",
        type=int,
        default=1,
        help="images per conversation (default %(default)s, as LLaVA-1.5 was trained)",
    )
    parser.add_argument(
        "--max-image-pixels", type=int, default=25_000_000, help="larger images are refused (default %(default)s)"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=256, help="new tokens when a request names none (default %(default)s)"
    )
    parser.add_argument(
        "--image-dir",
        default=None,
        help="a folder whose files requests may name by path (default: none, data URLs only)",
    )
    parser.add_argument(
        "--name", default=None, help="the model id /v1/models reports (default: the --model folder's name)"
    )
    parser.add_argument("--tools", default=None, help="the agent tab's tool YAML, as `mage agent --tools`")
    parser.add_argument(
        "--step-timeout", type=float, default=120.0, help="agent: seconds per step (default %(default)s)"
    )
    parser.add_argument("--max-steps", type=int, default=16, help="agent: refuse longer plans (default %(default)s)")
    parser.add_argument("--no-agent", action="store_true", help="no agent tab")


def _error(message: str) -> int:
    print(f"mage serve: error: {message}", file=sys.stderr)
    return 2


def check_arguments(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments, or `None` (checked before anything heavy is imported)."""
    for name in ("threads", "max_batch", "max_queue", "max_images", "max_image_pixels", "max_tokens", "max_steps"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}"
    if not 0 <= args.port <= 65535:
        return f"--port must be in 0..65535, got {args.port}"
    if args.batch_window < 0 or args.step_timeout <= 0:
        return "--batch-window must be >= 0 and --step-timeout > 0"
    if args.image_dir is not None and not Path(args.image_dir).is_dir():
        return f"--image-dir {args.image_dir} is not a folder"
    if args.tools is not None and not Path(args.tools).is_file():
        return f"--tools {args.tools} does not exist"
    model = Path(args.model)
    if model.exists() and not (model / "config.json").is_file():
        return f"--model {model} is not a checkpoint folder (no config.json)"
    if not model.exists() and (args.model.count("/") != 1 or args.model.startswith((".", "/"))):
        return f"--model {args.model} is neither a folder nor a Hub id (owner/name)"
    return None


def run(args: argparse.Namespace) -> int:
    """Load the model and serve until interrupted."""
    problem = check_arguments(args)
    if problem:
        return _error(problem)
    import torch  # heavy

    from mage_cli.serving.app import ServeOptions, Server, build_app  # optional

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    try:
        model, processor = load_mage(args.model)
        model = model.to(args.device)
    except (OSError, ValueError, RuntimeError) as error:
        return _error(f"cannot load --model {args.model}: {str(error).splitlines()[0]}")
    options = ServeOptions(
        model_name=args.name or Path(args.model.rstrip("/")).name,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        batch_window=args.batch_window,
        max_images=args.max_images,
        default_max_tokens=args.max_tokens,
        max_image_pixels=args.max_image_pixels,
        image_dir=Path(args.image_dir).resolve() if args.image_dir else None,
        agent=not args.no_agent,
        tools=args.tools,
        step_timeout=args.step_timeout,
        max_steps=args.max_steps,
    )
    try:
        app, engine = build_app(model, processor, options)
        server = Server(app, args.host, args.port, log_level="info")
    except (OSError, ValueError) as error:
        return _error(str(error))
    print(f"mage serve: {options.model_name} on {server.url} (web chat at /, API at /v1)", flush=True)
    try:
        server.run()
    finally:
        engine.close()
    return 0


__all__ = ["add_arguments", "check_arguments", "run"]
