"""Two CPU processes under `accelerate launch` on the tiny model match one process at the same global batch.

accelerate 1.x runs `--cpu --num_processes 2` as ONE process unless MPI is installed, so the launch goes through
torchrun (training/accelerate_configs/ddp_cpu.yaml) and `mage train` selects CPU (gloo, MULTI_CPU) itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from inference.threads import torch_threads
from training.api import train
from training.fixtures import VOCABULARY, write_tiny_llava_dataset
from training.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    "max_steps=3",
    "logging_steps=1",
    "save_steps=100",
    "warmup_ratio=0",
    "group_by_modality_length=true",
    "learning_rate=0.5",
    "projector_lr=0.5",
    "optim=sgd",
    "max_grad_norm=0",
    "bf16=false",
]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """1 torch thread: on the shared 2-core machine the default 2 threads spun and ran these tests up to 26x slower."""
    with torch_threads(1):
        yield


@pytest.mark.slow
def test_two_cpu_processes_match_one(tmp_path):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    if accelerate is None:
        pytest.skip("accelerate CLI not installed next to the interpreter")
    from mage_testing.tiny import build_tiny_mage

    model, processor = build_tiny_mage([VOCABULARY], seed=4)
    model.config.mage_trained_stages = [1]
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    data = write_tiny_llava_dataset(tmp_path / "data", num_images=10, num_text_only=6, seed=4)

    single = train(
        load_recipe("stage2_tiny", [*SETTINGS, "per_device_train_batch_size=4"]),
        tmp_path / "model",
        data,
        tmp_path / "single",
        disable_tqdm=True,
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        accelerate,
        "launch",
        "--config_file",
        str(ROOT / "training" / "accelerate_configs" / "ddp_cpu.yaml"),
        "--num_processes",
        "2",
        "-m",
        "mage_cli.main",
        "train",
        "--recipe",
        "stage2_tiny",
        "--model",
        str(tmp_path / "model"),
        "--data",
        str(data),
        "--output-dir",
        str(tmp_path / "ddp"),
        "--no-progress",
        *[part for setting in SETTINGS for part in ("--set", setting)],
        "--set",
        "per_device_train_batch_size=2",
    ]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("'itg_loss'") == 3  # one logging process, 3 steps: the two ranks trained as one
    expected, got = load_file(single / "model.safetensors"), load_file(tmp_path / "ddp" / "model.safetensors")
    initial = load_file(tmp_path / "model" / "model.safetensors")
    changed = [name for name in expected if not torch.equal(expected[name], initial[name])]
    assert any("multi_modal_projector" in name for name in changed) and any("layers" in name for name in changed)
    # SGD (Adam would turn float-order noise in near-zero gradients into lr-sized steps): the gradients must agree
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5)
    ddp_first = json.loads((tmp_path / "ddp" / "training_report.json").read_text())["first_log"]
    single_first = json.loads((single / "training_report.json").read_text())["first_log"]
    for key in ("itg_loss", "itdm_loss", "loss"):
        assert ddp_first[key] == pytest.approx(single_first[key], rel=1e-4)
