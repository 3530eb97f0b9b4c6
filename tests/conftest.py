"""Shared fixtures: tiny random MAGE models built offline (no downloads, seconds to build)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(1)  # tiny models gain nothing from more threads; subprocess tests get the rest


@pytest.fixture(scope="session")
def tiny_mage():
    """`(model, processor)`: a tiny random MAGE with the IAN (Q=4), in eval mode. Do not modify it in tests."""
    from mage_testing.tiny import build_tiny_mage

    return build_tiny_mage(seed=0)


@pytest.fixture(scope="session")
def tiny_mage_dir(tmp_path_factory, tiny_mage):
    """The tiny MAGE saved with remote code and its processor."""
    model, processor = tiny_mage
    path = tmp_path_factory.mktemp("tiny_mage")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture()
def shape_image():
    """A 64×64 RGB image with a red square on grey."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), (128, 128, 128))
    ImageDraw.Draw(image).rectangle([8, 8, 30, 30], fill=(220, 20, 20))
    return image
