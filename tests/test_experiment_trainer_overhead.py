"""`experiments/trainer_overhead/trainer_overhead.py` runs every variant at tiny step counts and writes its table and numbers (the
ratios themselves are measured by the benchmark, not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_trainer_overhead_benchmark_writes_every_variant(tmp_path):
    out = tmp_path / "overhead.md"
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    completed = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "trainer_overhead" / "trainer_overhead.py"), "--steps", "2", "--blocks", "1",
         "--warmup", "1", "--workers", "0", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    numbers = json.loads(out.with_suffix(".json").read_text())
    variants = [row["variant"] for row in numbers["rows"]]
    assert variants == ["plain loop (pre-collated batches)", "MageTrainer, 0 dataloader workers",
                        "MageTrainer, pretokenized, 0 dataloader workers"]  # fmt: skip
    assert all(row["median_ms"] > 0 and row["steps"] >= 1 for row in numbers["rows"])
    assert numbers["rows"][0]["ratio_to_plain"] == 1.0 and numbers["n_rows"] > 0
    assert "| MageTrainer, pretokenized, 0 dataloader workers |" in out.read_text()
