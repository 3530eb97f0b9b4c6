"""Stage-2 updates per second on the demo's shapes: one process against two data-parallel processes (torchrun via
`accelerate launch`, gloo, one torch thread each), at the same global batch and at half of it.

Every variant is `mage train` (the stage-2 tiny recipe with the demo's stage overrides, `mage_cli.demo_stages`) on the
demo's stage-2 rows from the demo's stage-0 checkpoint, `--steps` updates; the variants run one after another in
rounds (A B C D, A B C D, …) so machine load falls on all of them alike. The number is `train_runtime` from each run's
`training_report.json` (the training loop only, after the data is pre-tokenised).

    python experiments/demo_ladder/demo_stage0.py --seed 0 --out experiments/demo_ladder/cache/demo_stage0_seed0
    python experiments/ddp_throughput/ddp_throughput.py --steps 300 --rounds 2

Run it on an idle machine: it uses both cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from mage_cli.demo_stages import DemoSettings, stage_overrides  # noqa: E402

CACHE = ROOT / "experiments" / "demo_ladder" / "cache" / "demo_stage0_seed0"
# (name, processes, per-process batch)
VARIANTS = (("1 process, batch 32", 1, 32), ("2 processes × 16 (global 32)", 2, 16), ("1 process, batch 16", 1, 16),
            ("2 processes × 8 (global 16)", 2, 8))  # fmt: skip


def run_variant(processes: int, batch: int, steps: int, work: Path) -> dict:
    settings = DemoSettings()
    overrides = stage_overrides(settings, steps, seed=0, per_device_train_batch_size=batch)
    sets = [
        part for key, value in overrides.items() for part in ("--set", f"{key}={'null' if value is None else value}")
    ]
    out = work / f"p{processes}_b{batch}"
    shutil.rmtree(out, ignore_errors=True)
    mage = [
        "-m", "mage_cli.main", "train", "--recipe", "stage2_tiny", "--model", str(CACHE / "models" / "stage0"),
        "--data", str(CACHE / "data" / "train" / "stage2_instructions.json"), "--output-dir", str(out), "--no-progress",
        "--threads", "1", *sets,
    ]  # fmt: skip
    if processes == 1:
        command = [sys.executable, *mage]
    else:
        accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
        config = ROOT / "training" / "accelerate_configs" / "ddp_cpu.yaml"
        command = [accelerate, "launch", "--config_file", str(config), "--num_processes", str(processes), *mage]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    started = time.time()
    result = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    report = json.loads((out / "training_report.json").read_text())
    return {"train_runtime": report["metrics"]["train_runtime"], "wall": time.time() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    if not (CACHE / "models" / "stage0" / "model.safetensors").is_file():
        raise SystemExit(f"no demo stage 0 at {CACHE}: run demo_stage0.py first (see the docstring)")
    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {name: [] for name, _, _ in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            for name, processes, batch in VARIANTS:
                result = run_variant(processes, batch, args.steps, Path(tmp))
                runs[name].append(args.steps / result["train_runtime"])
                print(f"round {round_index}: {name}: {runs[name][-1]:.2f} updates/s", flush=True)
    base = runs[VARIANTS[0][0]]
    rows = []
    for name, processes, batch in VARIANTS:
        ratios = [r / b for r, b in zip(runs[name], base)]
        rows.append({
            "variant": name, "processes": processes, "per_process_batch": batch, "global_batch": processes * batch,
            "updates_per_s": runs[name], "median_updates_per_s": statistics.median(runs[name]),
            "ratio_to_one_process_batch_32": statistics.median(ratios),
            "questions_per_s": statistics.median(runs[name]) * processes * batch,
        })  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    result = {
        "command": "python experiments/ddp_throughput/ddp_throughput.py " + " ".join(sys.argv[1:]),
        "commit": commit, "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "load_before": load_before, "steps": args.steps,
        "rows": rows,
    }  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1))
    print("| variant | global batch | updates/s (median) | × 1 process batch 32 | questions/s |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['variant']} | {row['global_batch']} | {row['median_updates_per_s']:.2f} | "
            f"{row['ratio_to_one_process_batch_32']:.2f} | {row['questions_per_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
