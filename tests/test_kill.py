"""SIGKILL through the real CLI: `mage train` killed while saving a checkpoint resumes from the previous complete one
and ends with the same weights as an uninterrupted run; `mage eval` killed in the middle of a line resumes without
losing or duplicating a row. The kill is injected by a `sitecustomize` module on the child's path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from evaluation import fixtures
from training.fixtures import VOCABULARY, write_tiny_llava_dataset

REPO = Path(__file__).resolve().parents[1]

KILL_WHILE_SAVING = """
import os, signal
from transformers import Trainer
_save = Trainer._save_optimizer_and_scheduler
def _killing_save(self, output_dir):
    if self.state.global_step == int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)  # the weights of this checkpoint are written, the optimizer is not
    return _save(self, output_dir)
Trainer._save_optimizer_and_scheduler = _killing_save
"""

KILL_MID_LINE = """
import os, signal
import evaluation.runner as runner
_predict = runner._predict_rows
_calls = [0]
def _killing_predict(*args, **kwargs):
    _calls[0] += 1
    if _calls[0] == int(os.environ["KILL_AT_BATCH"]):
        with open(os.environ["KILL_FILE"], "a", encoding="utf-8") as handle:
            handle.write('{"uid": "pope-rand')  # half a row on disk when the process dies
        os.kill(os.getpid(), signal.SIGKILL)
    return _predict(*args, **kwargs)
runner._predict_rows = _killing_predict
"""


def mage(*argv: str, hook: str | None = None, tmp: Path, **env_extra: str) -> subprocess.CompletedProcess:
    paths = [str(REPO)]
    if hook is not None:
        hook_dir = tmp / f"hook_{abs(hash(hook))}"
        hook_dir.mkdir(exist_ok=True)
        (hook_dir / "sitecustomize.py").write_text(hook, encoding="utf-8")
        paths.insert(0, str(hook_dir))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        **env_extra,
    }
    return subprocess.run(
        [sys.executable, "-m", "mage_cli.main", *argv], env=env, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from mage_testing.tiny import build_tiny_mage

    root = tmp_path_factory.mktemp("kill")
    model, processor = build_tiny_mage([VOCABULARY], seed=0)
    model.config.mage_trained_stages = [1]
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    data = write_tiny_llava_dataset(root / "data", num_images=12, num_text_only=4, seed=0)
    return root, root / "model", data


@pytest.mark.slow
def test_train_killed_while_saving_resumes_to_the_same_weights(workspace, tmp_path):
    _, model, data = workspace
    settings = [
        "max_steps=6",
        "save_steps=2",
        "per_device_train_batch_size=4",
        "warmup_ratio=0",
        "dataloader_num_workers=0",
        "logging_steps=1",
    ]
    common = [
        "train",
        "--recipe",
        "stage2_tiny",
        "--model",
        str(model),
        "--data",
        str(data),
        "--threads",
        "1",
        "--no-progress",
        *[x for s in settings for x in ("--set", s)],
    ]
    straight = mage(*common, "--output-dir", str(tmp_path / "straight"), tmp=tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    killed = mage(*common, "--output-dir", str(killed_dir), hook=KILL_WHILE_SAVING, tmp=tmp_path, KILL_AT_STEP="4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (killed_dir / "checkpoint-2" / "trainer_state.json").is_file()
    assert (killed_dir / "checkpoint-4").is_dir() and not (killed_dir / "checkpoint-4" / "trainer_state.json").exists()
    assert not (killed_dir / "model.safetensors").exists()

    resumed = mage(*common, "--output-dir", str(killed_dir), "--resume", tmp=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "checkpoint-4 was not saved completely" in resumed.stderr
    assert (killed_dir / ".incomplete-checkpoint-4").is_dir()
    expected = load_file(tmp_path / "straight" / "model.safetensors")
    got = load_file(killed_dir / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert (expected[name] == got[name]).all(), name


@pytest.mark.slow
def test_eval_killed_mid_line_resumes_without_losing_or_duplicating_rows(tiny_mage_dir, tmp_path):
    data = fixtures.write_pope(str(tmp_path / "pope"), questions_per_split=3)
    common = [
        "eval",
        "--model",
        str(tiny_mage_dir),
        "--benchmark",
        "pope",
        "--data",
        data,
        "--batch-size",
        "2",
        "--max-new-tokens",
        "2",
        "--threads",
        "1",
        "--no-progress",
        "--no-plots",
    ]
    assert mage(*common, "--output-dir", str(tmp_path / "straight"), tmp=tmp_path).returncode == 0

    out = tmp_path / "killed"
    predictions = out / "predictions_pope.jsonl"
    killed = mage(
        *common,
        "--output-dir",
        str(out),
        hook=KILL_MID_LINE,
        tmp=tmp_path,
        KILL_AT_BATCH="3",
        KILL_FILE=str(predictions),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    lines = predictions.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 + 4 + 1 and lines[-1].endswith('{"uid": "pope-rand')  # header, 2 batches of 2, a torn row

    resumed = mage(*common, "--output-dir", str(out), tmp=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()[1:]]
    uids = [row["uid"] for row in rows]
    assert len(uids) == len(set(uids)) == 9
    straight_rows = [json.loads(line) for line in (tmp_path / "straight" / "predictions_pope.jsonl").open()][1:]
    assert {r["uid"]: r["prediction"] for r in rows} == {r["uid"]: r["prediction"] for r in straight_rows}
    first = json.loads((tmp_path / "straight" / "results.json").read_text())["benchmarks"]["pope"]["scores"]
    assert json.loads((out / "results.json").read_text())["benchmarks"]["pope"]["scores"] == first
