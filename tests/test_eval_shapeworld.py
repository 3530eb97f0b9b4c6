"""End to end on ShapeWorld's benchmark splits (official layouts): loaders, oracle scores, tiny-model run."""

from __future__ import annotations

import os

import pytest

from evaluation.api import evaluate, load_benchmark, score_predictions

shapeworld = pytest.importorskip("shapeworld.dataset")


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shapeworld"))
    counts = shapeworld.write_benchmarks(root, n=6, seed=0, image_size=64)
    return os.path.join(root, "benchmarks"), counts


def test_shapeworld_splits_load_and_an_oracle_scores_full_marks(splits):
    root, counts = splits
    from evaluation.api import find_benchmark_data

    expected_prompts = {"mme": counts["mme"], "pope": counts["pope"], "seed": counts["seed"]}
    for name in ("mme", "pope", "mmbench", "mmbench_cn", "seed"):
        loaded = load_benchmark(name, find_benchmark_data(root, name))
        assert not loaded.skipped, loaded.skipped
        records = loaded.records
        if name in expected_prompts:
            assert len(records) == expected_prompts[name]
        else:  # every question asked once per rotation of its options
            assert len({r.group for r in records}) == counts["mmbench"]
            assert len(records) == sum(len(r.options) for r in records if r.round == 0)
        oracle = {r.uid: (r.answer.capitalize() + "." if name in ("mme", "pope") else r.answer) for r in records}
        scores = score_predictions(name, records, oracle)
        if name == "mme":
            assert scores["perception"] + scores["cognition"] == pytest.approx(200 * len(scores["subtasks"]))
        elif name == "pope":
            assert scores["f1_mean"] == pytest.approx(100.0)
        elif name == "seed":
            assert scores["overall"] == pytest.approx(100.0)
        else:
            assert scores["circular_accuracy"] == pytest.approx(100.0) and scores["unresolved_answers"] == 0
        images = {r.image_path or r.image_id for r in records}
        assert records[0].load_image().size == (64, 64) and len(images) >= 1


@pytest.mark.slow
def test_tiny_mage_end_to_end_on_shapeworld(tiny_mage, splits, tmp_path):
    model, processor = tiny_mage
    root, _ = splits
    result = evaluate(
        model, processor, "all", root, str(tmp_path), batch_size=8, max_new_tokens=3, limit=4, progress=False
    )
    assert set(result["benchmarks"]) == {"mme", "pope", "mmbench", "mmbench_cn", "seed"}
    assert set(result["summary"]) >= {"MMB", "MMB^cn", "SEED^I", "MME^P", "MME^C", "POPE", "Avg^N"}
    assert result["benchmarks"]["mme"]["layout"] == "mme-B"
    assert os.path.isfile(tmp_path / "results.md") and os.path.isfile(tmp_path / "mme_subtasks.png")
