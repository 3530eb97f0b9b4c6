"""ShapeWorld's LLaVA-format files go through the training loaders with nothing skipped, and `mage train` runs
stage 1 → 2 → 3 on them (short; the long run and its numbers are in docs/training.md)."""

from __future__ import annotations

import json

import pytest

from inference.threads import torch_threads
from mage_cli.main import main as mage
from training.data import build_dataset

shapeworld = pytest.importorskip("shapeworld")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """1 torch thread: on the shared 2-core machine the default 2 threads spun and ran these tests up to 26x slower."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from mage_testing.tiny import build_tiny_mage

    root = tmp_path_factory.mktemp("shapeworld")
    shapeworld.generate_dataset(
        str(root / "data"),
        48,
        8,
        seed=0,
        image_size=64,
        difficulty="easy",
        n_tools_train=24,
        n_tools_eval=4,
        benchmarks=(),
    )
    model, processor = build_tiny_mage(
        list(shapeworld.text_corpus(50, seed=0, difficulty="easy")), seed=0, vocab_size=1500
    )
    model.save_pretrained(root / "stage0")
    processor.save_pretrained(root / "stage0")
    return {"root": root, "paths": shapeworld.dataset_paths(str(root / "data")), "processor": processor}


@pytest.mark.parametrize(
    "part,template",
    [("stage1", "plain"), ("stage2", "vicuna_v1"), ("stage3", "vicuna_v1"), ("eval_stage2", "vicuna_v1")],
)
def test_every_row_loads_and_masks(world, part, template):
    dataset = build_dataset(world["paths"][part], world["processor"], template, max_length=1024)
    items = [dataset[i] for i in range(len(dataset))]
    assert dataset.skips.report() == "no rows skipped"
    assert all((item["labels"] != -100).any() for item in items)
    if part.startswith("stage3"):
        answers = [world["processor"].tokenizer.decode(item["labels"][item["labels"] != -100]) for item in items]
        assert all(answer.strip().startswith("[") for answer in answers)  # plans are the targets


def test_three_stages_run(world):
    root, paths = world["root"], world["paths"]
    previous = root / "stage0"
    for stage, part in ((1, "stage1"), (2, "stage2"), (3, "stage3")):
        output = root / f"stage{stage}"
        argv = [
            "train",
            "--recipe",
            f"stage{stage}_tiny",
            "--model",
            str(previous),
            "--data",
            paths[part],
            "--output-dir",
            str(output),
            "--set",
            "max_steps=3",
            "--set",
            "logging_steps=1",
            "--set",
            "per_device_train_batch_size=8",
            "--no-progress",
            "--threads",
            "1",
        ]
        if stage == 3:
            argv += ["--set", f"replay_data={paths['stage2']}", "--set", "replay_ratio=0.25"]
        assert mage(argv) == 0
        report = json.loads((output / "training_report.json").read_text())
        assert report["last_log"]["itg_loss"] > 0 and report["skipped"] == {}
        previous = output
    assert json.loads((previous / "config.json").read_text())["mage_trained_stages"] == [1, 2, 3]
