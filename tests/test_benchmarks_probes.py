"""The diagnostic probes in `benchmarks/` run on a tiny model and a tiny ShapeWorld split."""

from __future__ import annotations

import json
import shutil

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
    from mage_testing.tiny import build_tiny_mage
    from shapeworld import text_corpus

    model, processor = build_tiny_mage(list(text_corpus(num_scenes=20, seed=0)), image_size=48, num_query_tokens=9)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    eval_split = shutil.copytree(Path(world["stage2"]).parents[1] / "eval", tmp_path / "eval")
    data = eval_split / "stage2_instructions.json"
    items = json.loads(data.read_text())
    kinds = {" ".join(row["conversations"][0]["value"].replace("<image>\n", "").split()[:2]) for row in items}
    stats = measure(str(tmp_path / "model"), str(data), rows=len(items), batch_size=5)
    assert set(stats) == kinds and sum(total for _, total in stats.values()) == len(items)
    # the caption replaces the image: with the images gone the text-only probe still answers every row
    shutil.rmtree(data.parent / "images")
    stats = measure(str(tmp_path / "model"), str(data), rows=len(items), batch_size=5, caption_in_context=True)
    assert set(stats) == kinds and sum(total for _, total in stats.values()) == len(items)
    # without the split's scenes there is no caption: a clear error naming the file, not a KeyError mid-run
    (data.parent / "scenes.jsonl").unlink()
    with pytest.raises(ValueError, match="scenes.jsonl"):
        measure(str(tmp_path / "model"), str(data), rows=len(items), batch_size=5, caption_in_context=True)


def test_binding_probe_names_the_missing_scenes_file(tmp_path):
    from benchmarks.binding_probe import _scenes

    with pytest.raises(FileNotFoundError, match="scenes.jsonl"):
        _scenes(tmp_path / "train", limit=10)
