"""Stage 1 → 2 → 3 with `mage train` on the tiny model and a tiny shapes world (CPU, ~70 s): ITG and ITDM fall in
every stage, stage 2 learns to answer held-out colour questions and stage 3 keeps that skill."""

from __future__ import annotations

import json
import random

import pytest
import torch

from inference.threads import torch_threads
from mage_cli.main import main as mage
from training.fixtures import COLOURS, SHAPES, VOCABULARY, draw, write_tiny_llava_dataset

STEPS = {1: 100, 2: 200, 3: 60}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """1 torch thread: on the shared 2-core machine the default 2 threads spun and ran these tests up to 26x slower."""
    with torch_threads(1):
        yield


def colour_accuracy(path, n: int = 40) -> float:
    """Greedy answers to "What colour is the shape?" on `n` held-out images (seed 99, never in training)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    rng = random.Random(99)
    items = [
        (rng.choice(sorted(COLOURS)), rng.choice(SHAPES), (rng.randrange(0, 40), rng.randrange(0, 40)))
        for _ in range(n)
    ]
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the shape?"}]}],
        add_generation_prompt=True,
    )
    inputs = processor(
        images=[draw(c, s, position=p) for c, s, p in items], text=[prompt] * n, return_tensors="pt", padding=True
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return sum(answer.strip().startswith(colour) for answer, (colour, _, _) in zip(answers, items)) / n


@pytest.mark.slow
def test_three_stages_on_cpu(tmp_path):
    from mage_testing.tiny import build_tiny_mage

    model, processor = build_tiny_mage([VOCABULARY] * 20, seed=0)
    model.save_pretrained(tmp_path / "stage0")
    processor.save_pretrained(tmp_path / "stage0")
    data = {
        1: write_tiny_llava_dataset(tmp_path / "d1", 512, 0, stage=1, seed=1),
        # 2,048 images: on 512, 200 steps (12 epochs) answered held-out colours at 0.2–0.58 over seeds 0–2; on
        # 2,048, 1.0 for seeds 0 and 1
        2: write_tiny_llava_dataset(tmp_path / "d2", 2048, 64, stage=2, seed=2),
        3: write_tiny_llava_dataset(tmp_path / "d3", 128, 0, stage=3, seed=3),
    }
    previous = tmp_path / "stage0"
    for stage in (1, 2, 3):
        output = tmp_path / f"stage{stage}"
        argv = [
            "train",
            "--recipe",
            f"stage{stage}_tiny",
            "--model",
            str(previous),
            "--data",
            str(data[stage]),
            "--output-dir",
            str(output),
            "--set",
            f"max_steps={STEPS[stage]}",
            "--set",
            "logging_steps=10",
            "--no-progress",
        ]
        if stage == 3:
            # half the stage-3 mix replayed: at the paper's 10 % (14 rows beside 128 plans) stage 3 took held-out
            # colour accuracy from 1.0 after stage 2 to 0.28–0.38 (seeds 0, 1); at 50 % it kept 0.98–1.0
            argv += ["--set", f"replay_data={data[2]}", "--set", "replay_ratio=0.5"]
        assert mage(argv) == 0
        report = json.loads((output / "training_report.json").read_text())
        first, last = report["first_log"], report["last_log"]
        assert last["itg_loss"] < first["itg_loss"] and last["itdm_loss"] < first["itdm_loss"], (stage, first, last)
        previous = output
    config = json.loads((previous / "config.json").read_text())
    assert config["mage_trained_stages"] == [1, 2, 3]
    before, stage2, after = (colour_accuracy(tmp_path / name) for name in ("stage0", "stage2", "stage3"))
    assert stage2 >= 0.8 and after >= 0.8 and before <= 0.5, (before, stage2, after)
