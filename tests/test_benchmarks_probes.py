"""The diagnostic probes in `benchmarks/` run on a tiny model and a tiny ShapeWorld split."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from shapeworld import dataset_paths, generate_dataset

    folder = tmp_path_factory.mktemp("world")
    generate_dataset(str(folder), 8, 12, seed=0, image_size=48, difficulty="easy", benchmarks=())
    return dataset_paths(str(folder))


def test_scene_captions_are_the_captions_the_stage1_rows_train_on(world):
    from pathlib import Path

    from benchmarks.instruction_accuracy import _scene_captions

    captions = _scene_captions(Path(world["stage1"]).parent)
    rows = json.loads(Path(world["stage1"]).read_text())
    assert rows and all(captions[row["image"]] == row["conversations"][1]["value"] for row in rows)


def test_instruction_accuracy_counts_every_row_with_and_without_the_image(world, tmp_path):
    from pathlib import Path

    from benchmarks.instruction_accuracy import measure
    from mage_cli.tiny import build_tiny_mage
    from shapeworld import text_corpus

    model, processor = build_tiny_mage(list(text_corpus(num_scenes=20, seed=0)), image_size=48, num_query_tokens=9)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    data = Path(world["stage2"]).parents[1] / "eval" / "stage2_instructions.json"
    rows = len(json.loads(data.read_text()))
    for caption_in_context in (False, True):
        stats = measure(str(tmp_path), str(data), rows=rows, batch_size=5, caption_in_context=caption_in_context)
        assert sum(total for _, total in stats.values()) == rows
        assert all(0 <= correct <= total for correct, total in stats.values())
