"""ShapeWorld generation speed and memory: `generate_dataset` at a given image size, timed in fresh processes.

Usage:
  python benchmarks/shapeworld_speed.py --train 2000 --eval 200 --image-size 336 \
      --report benchmarks/results/shapeworld_speed.md

"Samples" counts the training scenes only (each = one PNG + one stage-1 row + one stage-2 row), while the timed run
also writes the held-out split, the tool dialogues and all four benchmarks — so samples/min is a lower bound.
Memory is the peak RSS of the child process; it is measured at two sizes to show it stays flat in N.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
from shapeworld.dataset import generate_dataset
out, n_train, n_eval, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
start = time.perf_counter()
manifest = generate_dataset(out, n_train, n_eval, seed=0, image_size=size)
seconds = time.perf_counter() - start
counts = manifest["counts"]
items = (counts["train_scenes"] + counts["eval_scenes"] + counts["stage3_train_rows"] + counts["stage3_eval_rows"]
         + 4 * counts["benchmark_items"])
print(json.dumps({"seconds": seconds, "items": items, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(n_train: int, n_eval: int, image_size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [sys.executable, "-c", CHILD, os.path.join(tmp, "sw"), str(n_train), str(n_eval), str(image_size)],
            capture_output=True,
            text=True,
            check=True,
        )
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(tmp) for f in fs)
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row.update(n_train=n_train, n_eval=n_eval, image_size=image_size, disk_mib=size / 2**20)
    row["train_samples_per_min"] = 60 * n_train / row["seconds"]
    row["items_per_min"] = 60 * row["items"] / row["seconds"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=336)
    parser.add_argument("--target", type=float, default=2000.0, help="samples/min the issue asks for")
    parser.add_argument("--report", default=None, help="write a Markdown report here")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    small = measure(max(1, args.train // 4), max(1, args.eval // 4), args.image_size)
    full = measure(args.train, args.eval, args.image_size)
    load_after = os.getloadavg()
    ok = full["train_samples_per_min"] >= args.target
    lines = [
        "# ShapeWorld generation speed",
        "",
        f"Command: `python benchmarks/shapeworld_speed.py --train {args.train} --eval {args.eval} "
        f"--image-size {args.image_size}`",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}, one process; load average before {load_before[0]:.2f}, after "
        f"{load_after[0]:.2f} (the machine is shared with other engineers' jobs).",
        "",
        "| train scenes | eval items | image px | wall s | train samples/min | all items/min | peak RSS MiB | disk MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in (small, full):
        lines.append(
            f"| {row['n_train']} | {row['n_eval']} | {row['image_size']} | {row['seconds']:.1f} | "
            f"{row['train_samples_per_min']:,.0f} | {row['items_per_min']:,.0f} | {row['peak_rss_mib']:.0f} | "
            f"{row['disk_mib']:.1f} |"
        )
    lines += [
        "",
        f"Target ≥ {args.target:,.0f} samples/min at {args.image_size} px: **{'met' if ok else 'NOT met'}** "
        f"({full['train_samples_per_min']:,.0f}). Samples = training scenes only; the timed run also writes the "
        'held-out split, tool dialogues and MME/POPE/MMBench/SEED ("all items"), so samples/min is a lower bound.',
        f"Peak memory at {small['n_train']} vs {full['n_train']} train scenes: {small['peak_rss_mib']:.0f} vs "
        f"{full['peak_rss_mib']:.0f} MiB (files are streamed; POPE keeps its scenes, small dicts, for the "
        "split-wide negative statistics).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.report:
        os.makedirs(os.path.dirname(args.report) or ".", exist_ok=True)
        with open(args.report, "w", encoding="utf-8") as handle:
            handle.write(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
