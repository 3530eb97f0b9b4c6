"""Evaluate a MAGE checkpoint on MME, POPE, MMBench (EN/CN), SEED-Bench or tool plans, with official-equivalent scoring.

Examples:
  mage eval --model ckpt/ --benchmark pope --data data/pope --output-dir runs/pope
  mage eval --model ckpt/ --benchmark all --data shapeworld_eval/ --output-dir runs/all --batch-size 16
  mage eval --model ckpt/ --benchmark seed --data SEED/ --scoring likelihood --output-dir runs/seed
  mage eval --model ckpt/ --benchmark mme --data MME/ --blank-images --output-dir runs/mme_text_only
  mage eval --benchmark pope --data data/pope --predictions answers.jsonl --output-dir runs/pope_llava

`--data` takes a benchmark in its official layout (MME folders, POPE JSONL + images, MMBench TSV, SEED JSON + images)
or the lmms-eval parquet layout; with `--benchmark all` it holds one sub-folder per benchmark (mme*, pope*, mmbench*,
seed*). Predictions are appended to DIR/predictions_<benchmark>.jsonl as they are made: rerun the same command to
resume an interrupted run. DIR/results.json, results.md and PNG plots hold the report.

Answers are read with `--rules official` (default: each benchmark's own scoring script, rule for rule) or `lenient`
(the earlier, forgiving reading); the report names the rules behind every number and adds lmms-eval's variant.
`--predictions FILE` scores an existing predictions file without loading a model (no --model needed): LLaVA's answer
JSONL (question_id, text), this tool's predictions_<benchmark>.jsonl, MME eval-tool folders, MMBench TSV/XLSX with a
prediction column, or SEED's submission JSONL (question_id, prediction). See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys

from inference.threads import add_threads_argument

from .api import BENCHMARKS, evaluate, find_benchmark_data, load_benchmark
from .predictions_io import score_predictions_file
from .provenance import model_fingerprint
from .records import BenchmarkFormatError

BENCHMARK_CHOICES = ("mme", "pope", "mmbench", "mmbench_cn", "seed", "plans", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`mage eval` options (no heavy imports here)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--model",
        default=None,
        help="checkpoint folder (MAGE saved with save_pretrained); not needed with --predictions",
    )
    parser.add_argument("--benchmark", required=True, choices=BENCHMARK_CHOICES)
    parser.add_argument("--data", required=True, help="benchmark data path (see above)")
    parser.add_argument("--output-dir", required=True, help="where predictions and the report go")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass (default 8)")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="only the first N images (MME), circular groups (MMBench) or questions (others)",
    )
    parser.add_argument(
        "--scoring",
        choices=("official", "generate", "likelihood"),
        default="official",
        help="official (default): each benchmark's own protocol (SEED: option likelihood; MME, POPE, MMBench: "
        "generated answer); generate: greedy answer + letter extraction everywhere; likelihood: option ranking "
        "for SEED and MMBench",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="generation length (default 16 for the benchmarks, the tool-use default for plans)",
    )
    add_threads_argument(parser)
    parser.add_argument(
        "--rules",
        "--mmbench-rules",
        dest="rules",
        default="official",
        choices=("official", "lenient", "vlmevalkit-2024", "vlmevalkit-2024-verbose"),
        help="how answers are read: official (default; each benchmark's own scoring script, rule for rule), lenient "
        "(= vlmevalkit-2024: the earlier forgiving reading), vlmevalkit-2024-verbose (lenient, a lone 'A' read as an "
        "article); --mmbench-rules is the old spelling",
    )
    parser.add_argument(
        "--predictions",
        default=None,
        metavar="FILE",
        help="score this existing predictions file (or MME eval-tool folder) instead of running a model",
    )
    parser.add_argument("--no-circular", action="store_true", help="MMBench: ask each question once (no rotations)")
    parser.add_argument("--blank-images", action="store_true", help="replace every image by grey (text-only baseline)")
    parser.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="skip (and count) malformed rows / missing images instead of stopping",
    )
    parser.add_argument(
        "--split", default=None, help="split of an lmms-eval parquet folder (default: test; dev for MMBench)"
    )
    parser.add_argument("--overwrite", action="store_true", help="discard earlier predictions instead of resuming")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, … (default: cuda if available)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class EvalUsageError(ValueError):
    """Bad `mage eval` input, reported as one line and exit code 2 before anything is loaded or written."""


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse numbers out of range and a `--model`/`--data` that cannot be what they claim, before loading torch."""
    for flag in ("batch_size", "limit", "max_new_tokens", "threads"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise EvalUsageError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if getattr(args, "predictions", None) is not None:
        if args.benchmark in ("plans", "all"):
            raise EvalUsageError(f"--predictions scores one benchmark; --benchmark {args.benchmark} is not one")
        if not os.path.exists(args.predictions):
            raise EvalUsageError(f"--predictions {args.predictions!r} does not exist")
    elif args.model is None:
        raise EvalUsageError("--model is required (unless --predictions FILE scores an existing predictions file)")
    else:
        check_model_folder(args.model)
    if not os.path.exists(args.data):
        raise EvalUsageError(f"--data {args.data!r} does not exist")
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise EvalUsageError(f"--output-dir {args.output_dir!r} is a file, not a folder")


def check_model_folder(path: str) -> None:
    """A MAGE checkpoint folder: exists, holds `config.json` with `model_type: "mage"`."""
    if not os.path.isdir(path):
        raise EvalUsageError(f"--model {path!r} is not a folder; expected a checkpoint saved with save_pretrained")
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise EvalUsageError(f"--model {path!r} holds no config.json; expected a checkpoint saved with save_pretrained")
    try:
        with open(config_path, encoding="utf-8") as handle:
            model_type = json.load(handle).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise EvalUsageError(f"{config_path}: not a JSON object ({error})") from error
    if model_type != "mage":
        raise EvalUsageError(
            f"{config_path}: model_type is {model_type!r}, expected 'mage' (convert a LLaVA checkpoint first: "
            "mage convert llava-hf)"
        )


def load_model(path: str, device: str = "auto", dtype: str = "auto"):
    """`(model, processor)` from a MAGE checkpoint folder, in eval mode on `device`."""
    import torch  # heavy
    from transformers import AutoModelForImageTextToText, AutoProcessor  # heavy

    import modeling_mage  # heavy  # noqa: F401  (registers the Auto classes)
    import processing_mage  # heavy  # noqa: F401

    if not os.path.isdir(path):
        raise FileNotFoundError(f"--model {path!r} is not a folder; expected a checkpoint saved with save_pretrained")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype).to(device).eval()
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


def run_plans(model, processor, args: argparse.Namespace) -> dict:
    """`--benchmark plans`: hand over to the tool-use package (`tool_use.eval_plans.evaluate_plan_model`, which
    generates a plan per held-out tool request and scores it with `evaluate_plans`); imported only here."""
    try:
        from tool_use import eval_plans  # optional
    except ImportError as error:
        raise SystemExit(f"mage eval --benchmark plans needs the tool_use package ({error})") from error
    runner = getattr(eval_plans, "evaluate_plan_model", None)
    if runner is None:
        raise SystemExit(
            "mage eval --benchmark plans: tool_use.eval_plans has no evaluate_plan_model(model, processor, "
            "data, ...) in this build"
        )
    offered = {
        "model": model,
        "processor": processor,
        "data": args.data,
        "output_dir": args.output_dir,
        "batch_size": args.batch_size,
        "limit": args.limit,
        "max_new_tokens": args.max_new_tokens,
        "progress": not args.no_progress,
    }
    parameters = inspect.signature(runner).parameters
    kwargs = {k: v for k, v in offered.items() if k in parameters and v is not None}
    result = runner(**kwargs)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "results_plans.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2, ensure_ascii=False, default=str)
    return result


def check_data(args: argparse.Namespace) -> None:
    """Load the benchmark records (images stay on disk) so a malformed file fails before the model loads."""
    names = list(BENCHMARKS) if args.benchmark == "all" else [args.benchmark]
    for name in names:
        path = args.data if args.benchmark != "all" else find_benchmark_data(args.data, name)
        if path is not None:
            load_benchmark(name, path, circular=not args.no_circular, strict=not args.skip_bad_rows, split=args.split)


def _error(message: str) -> int:
    print(f"mage eval: error: {message}", file=sys.stderr)
    return 2


def run_predictions_file(args: argparse.Namespace) -> int:
    """`--predictions FILE`: score an existing predictions file against `--data`, no model loaded."""
    try:
        results = score_predictions_file(
            args.benchmark,
            args.data,
            args.predictions,
            args.output_dir,
            rules=args.rules,
            scoring=args.scoring,
            strict=not args.skip_bad_rows,
            split=args.split,
            plots=not args.no_plots,
        )
    except BenchmarkFormatError as error:
        return _error(str(error))
    with open(results["files"]["markdown"], encoding="utf-8") as handle:
        print(handle.read())
    print(f"report: {results['files']['json']}")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        check_arguments(args)
    except EvalUsageError as error:
        return _error(str(error))
    if args.predictions is not None:
        return run_predictions_file(args)
    from .runner import SettingsMismatch, check_same_model  # heavy

    if args.benchmark != "plans":  # bad data is named before a model is loaded
        try:
            check_data(args)
        except BenchmarkFormatError as error:
            return _error(str(error))
    model_sha256 = None  # the plans scorer keeps no predictions to resume
    if args.benchmark != "plans":
        model_sha256 = model_fingerprint(None, args.model)
        if not args.overwrite:
            try:
                check_same_model(args.output_dir, model_sha256)
            except SettingsMismatch as error:
                return _error(str(error))

    import torch  # heavy

    torch.set_num_threads(args.threads)
    try:
        model, processor = load_model(args.model, args.device, args.dtype)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return _error(f"cannot load --model {args.model!r}: {first_line}")
    if args.benchmark == "plans":
        result = run_plans(model, processor, args)
        print(json.dumps(result, indent=2, default=str))
        return 0
    try:
        results = evaluate(
            model,
            processor,
            args.benchmark,
            args.data,
            args.output_dir,
            batch_size=args.batch_size,
            limit=args.limit,
            scoring=args.scoring,
            blank_images=args.blank_images,
            max_new_tokens=args.max_new_tokens or 16,
            rules=args.rules,
            model_path=os.path.abspath(args.model),
            circular=not args.no_circular,
            strict=not args.skip_bad_rows,
            overwrite=args.overwrite,
            split=args.split,
            progress=not args.no_progress,
            plots=not args.no_plots,
            model_sha256=model_sha256,
        )
    except (BenchmarkFormatError, SettingsMismatch) as error:
        return _error(str(error))
    with open(results["files"]["markdown"], encoding="utf-8") as handle:
        print(handle.read())
    for name, bench in results["benchmarks"].items():
        rate = bench["timing"]["samples_per_second"]
        timing = bench["timing"]
        redone = timing.get("retried_failed", 0) + timing.get("redone_changed_input", 0)
        note = f" ({timing['resumed']} resumed, {redone} predicted again)" if timing["resumed"] or redone else ""
        print(f"{name}: {bench['samples']} samples" + (f", {rate:.2f} samples/s" if rate else "") + note)
    print(f"report: {results['files']['json']}")
    return 0


__all__ = [
    "EvalUsageError",
    "add_arguments",
    "check_arguments",
    "check_model_folder",
    "load_model",
    "run",
    "run_plans",
    "run_predictions_file",
]
