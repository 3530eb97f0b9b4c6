"""Stage 0 (vision): the CLIP-style pretraining of the tiny tower learns image ↔ caption retrieval, incl. position."""

from __future__ import annotations

import random

import torch
from PIL import Image, ImageDraw

from mage_testing.tiny import build_tiny_mage
from training.pretrain_tower import pretrain_vision_tower

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60)}


def _pairs(count: int, seed: int = 0):
    rng = random.Random(seed)
    images, captions = [], []
    for _ in range(count):
        colour, side = rng.choice(list(COLOURS)), rng.choice(["left", "right"])
        image = Image.new("RGB", (64, 64), (235, 235, 235))
        x = 8 if side == "left" else 38
        ImageDraw.Draw(image).ellipse([x, 22, x + 18, 40], fill=COLOURS[colour])
        images.append(image)
        captions.append(f"a {colour} circle on the {side}")
    return images, captions


def test_tower_learns_retrieval_including_position():
    images, captions = _pairs(400)
    model, processor = build_tiny_mage(texts=captions, seed=0)
    before = {name: p.clone() for name, p in model.model.vision_tower.named_parameters()}
    report = pretrain_vision_tower(
        model, processor, images, captions, max_steps=300, max_seconds=120, held_out=96, batch_size=32
    )
    # 6 distinct captions (3 colours × 2 sides): chance is about 1/6; left/right must be told apart to pass 0.9.
    assert report.retrieval_top1_before < 0.5
    assert report.retrieval_top1_after >= 0.9, report
    changed = [n for n, p in model.model.vision_tower.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "the tower did not train"
    assert not model.model.vision_tower.training
