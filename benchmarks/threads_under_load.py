"""Torch CPU threads on an idle and on a busy machine: which default keeps `mage eval` and `mage train` fast on both
(issue 26 item 9).

Each cell runs one workload in a fresh process for `--seconds` after a warm-up and reports its rate:
  eval   greedy generation (8 new tokens) for batches of 8 ShapeWorld-sized prompts on the tiny MAGE (samples/s);
  train  stage-2 optimizer steps (forward + backward + AdamW) on batches of 8 rows (steps/s).
Thread settings: `torch.set_num_threads(1)`, `(2)`, and `(2)` with `OMP_WAIT_POLICY=PASSIVE` (idle OpenMP threads
sleep instead of spinning). "busy" runs a competing process beside the cell: one torch thread multiplying matrices
without pause, as a second training job would. Cells alternate over `--rounds` rounds; the table gives the median
rate and its ratio to 1 thread on the same machine state.

    python benchmarks/threads_under_load.py --out benchmarks/results/threads_under_load.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"1 thread": (1, None), "2 threads": (2, None), "2 threads, OMP passive": (2, "PASSIVE")}


def _tiny_model():
    import torch

    from mage_testing.tiny import build_tiny_mage

    torch.manual_seed(0)
    model, processor = build_tiny_mage(texts=["is there a red circle yes no how many squares"] * 8, seed=0)
    return model, processor


def worker(workload: str, threads: int, seconds: float) -> dict:
    import torch
    from PIL import Image

    torch.set_num_threads(threads)
    model, processor = _tiny_model()
    images = [Image.new("RGB", (64, 64), (40 * i % 255, 90, 160)) for i in range(8)]
    prompts = [f"{processor.image_token}\nIs there a red circle in the image? {i}" for i in range(8)]
    processor.tokenizer.padding_side = "left"
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    if workload == "eval":
        model.eval()

        def step() -> int:
            with torch.inference_mode():
                model.generate(
                    **inputs, max_new_tokens=8, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id
                )
            return len(images)

    else:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)

        def step() -> int:
            optimizer.zero_grad()
            model(**inputs, labels=labels).loss.backward()
            optimizer.step()
            return 1

    for _ in range(3):
        step()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += step()
    return {"rate": done / (time.perf_counter() - start)}


def busy_loop() -> None:
    import torch

    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while True:
        a = torch.tanh(a @ a.T / 256)


def run_cell(workload: str, setting: str, busy: bool, seconds: float) -> float:
    threads, policy = SETTINGS[setting]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("OMP_NUM_THREADS", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    load = None
    if busy:
        load = subprocess.Popen([sys.executable, __file__, "--busy"], env={**env, "OMP_NUM_THREADS": "1"})
        time.sleep(1.0)
    try:
        completed = subprocess.run(
            [sys.executable, __file__, "--worker", workload, "--threads", str(threads), "--seconds", str(seconds)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        if load is not None:
            load.kill()
            load.wait()
    return json.loads(completed.stdout.strip().splitlines()[-1])["rate"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=("eval", "train"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--busy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per cell")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the table (.md) and the numbers (.json)")
    args = parser.parse_args()
    if args.busy:
        busy_loop()
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.seconds)))
        return
    rates: dict[tuple[str, str, str], list[float]] = {}
    for _ in range(args.rounds):
        for workload in ("eval", "train"):
            for state in ("idle", "busy"):
                for setting in SETTINGS:
                    rate = run_cell(workload, setting, state == "busy", args.seconds)
                    rates.setdefault((workload, state, setting), []).append(rate)
                    print(f"{workload:5} {state:4} {setting:24} {rate:8.2f}", flush=True)
    lines = [
        f"# Torch threads on an idle and a busy machine ({os.cpu_count()} cores)",
        "",
        f"Command: `python benchmarks/threads_under_load.py --seconds {args.seconds:g} --rounds {args.rounds}`. "
        "Median rate over the rounds (eval: samples/s, train: steps/s) and its ratio to 1 thread in the same state.",
        "",
        "| workload | machine | threads | rate | × 1 thread |",
        "|---|---|---|---|---|",
    ]
    table = {}
    for (workload, state, setting), values in rates.items():
        median = statistics.median(values)
        base = statistics.median(rates[(workload, state, "1 thread")])
        table[f"{workload}/{state}/{setting}"] = {"rates": values, "median": median, "ratio": median / base}
        lines.append(f"| {workload} | {state} | {setting} | {median:.2f} | {median / base:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        args.out.with_suffix(".json").write_text(json.dumps(table, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
