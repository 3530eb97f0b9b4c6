"""MAGE vs transformers' LLaVA-1.5, side by side in one process: training, memory, IAN share, prefill, decode,
LoRA/QLoRA and the data pipeline. One entry point:

    python -m benchmarks.perf --shapes tiny|small|7b|13b --device cpu|cuda [--quick] [--output FILE]

Both models are built with random weights from the same `Shapes` (benchmarks/flops.py): the same CLIP tower, the same
Llama LM, batch and text lengths; LLaVA feeds all N patch tokens to the LM, MAGE Q IAN queries. Timed work is
*interleaved* (LLaVA, MAGE-64, MAGE-16, … once each per repeat) and the median over repeats is reported, so slow
phases of a shared machine hit every model alike. Ratios are against LLaVA measured in the same run. Peak memory
is measured in a fresh subprocess per configuration (RSS on CPU, allocator peak on CUDA). The analytical model's
predictions sit next to the measured ratios with their relative error.

`--device cuda` uses bf16 weights, SDPA and gradient checkpointing (pass `--no-gradient-checkpointing` to turn it off);
the `--quick` CPU run at tiny shapes exercises every function the GPU path calls.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

from benchmarks.flops import SHAPES
from benchmarks.perf.memory import worker_main
from benchmarks.perf.report import markdown_report
from benchmarks.perf.runner import rederive, run_benchmark
from benchmarks.perf.settings import RunSettings

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


def settings_for(args: argparse.Namespace) -> RunSettings:
    cuda = args.device.startswith("cuda")
    settings = RunSettings(
        device=args.device,
        dtype=args.dtype or ("bfloat16" if cuda else "float32"),
        repeats=args.repeats or (2 if args.quick else 5),
        steps=1,
        warmup=1 if args.quick else 2,
        gradient_checkpointing=cuda if args.gradient_checkpointing is None else args.gradient_checkpointing,
        compile_backend=args.compile_backend,
        decode_tokens=args.decode_tokens,
        memory=not args.skip_memory,
        lora=not args.skip_lora,
        threads=args.threads,
        allocator=args.allocator,
        quick=args.quick,
    )
    return settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="small", help="size setting (benchmarks/flops.py)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="default: float32 on CPU, bfloat16 on CUDA",
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats (the test suite's smoke run)")
    parser.add_argument("--repeats", type=int, default=0, help="interleaved repeats per measurement")
    parser.add_argument("--decode-tokens", type=int, default=None, help="new tokens per decode measurement")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend for the static decode")
    ckpt = parser.add_mutually_exclusive_group()
    ckpt.add_argument("--gradient-checkpointing", dest="gradient_checkpointing", action="store_true", default=None)
    ckpt.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    parser.add_argument("--skip-memory", action="store_true", help="no per-configuration memory subprocesses")
    parser.add_argument("--skip-lora", action="store_true", help="no LoRA / QLoRA measurement")
    parser.add_argument(
        "--parts",
        default="training,machine,share,prefill,decode,pipeline,memory,lora",
        help="comma-separated measurements to run (training always runs)",
    )
    parser.add_argument(
        "--allocator",
        choices=["retain", "default"],
        default="retain",
        help="CPU: 'retain' keeps freed memory in the process heap (glibc mallopt; no per-step page "
        "faults), 'default' leaves glibc's mmap/trim behaviour (see configure_allocator)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="JSON path (a .md table is written next to it); default benchmarks/results/perf_<shapes>_<device>.json",
    )
    parser.add_argument(
        "--report",
        default=None,
        metavar="JSON",
        help="re-derive ratios, model comparison, targets and the .md table from a results JSON",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.worker:
        job = json.loads(Path(args.worker).read_text())
        with contextlib.redirect_stdout(io.StringIO()):
            report = worker_main(job)
        print("PERF_WORKER_RESULT " + json.dumps(report))
        return 0
    if args.report:
        path = Path(args.report)
        results = rederive(json.loads(path.read_text()))
        results["output"] = {"json": _display_path(path), "markdown": _display_path(path.with_suffix(".md"))}
        path.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
        path.with_suffix(".md").write_text(markdown_report(results), encoding="utf-8")
        print(markdown_report(results))
        return 0
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
            return 2
    shapes = SHAPES[args.shapes]
    settings = settings_for(args)
    command = "python -m benchmarks.perf " + " ".join(sys.argv[1:])

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    output = Path(args.output) if args.output else default_output(args.shapes, args.device)
    results = run_benchmark(shapes, settings, command=command, log=log, parts=parts)
    results["output"] = {"json": _display_path(output), "markdown": _display_path(output.with_suffix(".md"))}
    report = markdown_report(results)
    print(report)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    output.with_suffix(".md").write_text(report, encoding="utf-8")
    log(f"wrote {output} and {output.with_suffix('.md')}")
    return 0


def default_output(shapes: str, device: str) -> Path:
    """`benchmarks/results/perf_<shapes>_<device>.json` (`cuda:1` → `cuda`)."""
    return RESULTS_DIR / f"perf_{shapes}_{device.split(':')[0]}.json"


def _display_path(path: Path) -> str:
    """The path as recorded in the results: relative to the repository root when inside it, else absolute."""
    resolved = path.resolve()
    root = RESULTS_DIR.parent.parent
    with contextlib.suppress(ValueError):
        return str(resolved.relative_to(root))
    return str(resolved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
