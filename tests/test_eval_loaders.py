"""Loaders: the official layouts and the lmms-eval parquet layout give the same records; bad input names its place."""

from __future__ import annotations

import json
import os

import pytest

from evaluation import fixtures
from evaluation.api import limit_records, load_benchmark
from evaluation.records import BenchmarkFormatError


@pytest.mark.parametrize("layout", ["A", "B"])
def test_mme_both_official_layouts(tmp_path, layout):
    fixtures.write_mme(str(tmp_path / "MME_Benchmark_release_version"), images_per_subtask=2, layout=layout)
    loaded = load_benchmark("mme", str(tmp_path))  # the release folder's parent works too
    assert loaded.layout == f"mme-{layout}"
    assert len(loaded) == 12
    first = loaded.records[0]
    assert first.subtask == "existence" and first.answer == "yes" and first.image_id == "0000.png"
    assert first.question.endswith(" Please answer yes or no.")
    assert first.load_image().size == (64, 64)
    assert [r.answer for r in loaded.records[:2]] == ["yes", "no"]


def test_mme_bad_line_and_missing_image_name_file_and_row(tmp_path):
    root = fixtures.write_mme(str(tmp_path / "mme"), images_per_subtask=2, subtasks=("color",))
    txt = os.path.join(root, "color", "questions_answer_YES_NO", "0001.txt")
    with open(txt, "a", encoding="utf-8") as handle:
        handle.write("a question without an answer\n")
    with pytest.raises(BenchmarkFormatError, match=r"0001\.txt:3: expected 'question<TAB>answer'"):
        load_benchmark("mme", root)
    lenient = load_benchmark("mme", root, strict=False)
    assert len(lenient) == 2 and len(lenient.skipped) == 1
    os.remove(os.path.join(root, "color", "images", "0000.png"))
    with pytest.raises(BenchmarkFormatError, match=r"0000\.txt:1: no image named 0000"):
        load_benchmark("mme", root)


def test_wrong_layout_says_which_was_expected(tmp_path):
    (tmp_path / "color").mkdir()
    with pytest.raises(BenchmarkFormatError, match="MME layout A: .*questions_answer_YES_NO"):
        load_benchmark("mme", str(tmp_path))
    with pytest.raises(BenchmarkFormatError, match="POPE layout"):
        load_benchmark("pope", str(tmp_path))
    with pytest.raises(BenchmarkFormatError, match="SEED-Bench layout"):
        load_benchmark("seed", str(tmp_path))


def test_pope_jsonl_and_errors(tmp_path):
    root = fixtures.write_pope(str(tmp_path), questions_per_split=4)
    loaded = load_benchmark("pope", root)
    assert len(loaded) == 12 and {r.subtask for r in loaded.records} == {"adversarial", "popular", "random"}
    assert loaded.records[0].uid == "adversarial/1"
    path = os.path.join(root, "coco_pope_random.json")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"question_id": 9, "image": "missing.jpg", "text": "Is there a cat?", "label": "no"}\n')
    with pytest.raises(BenchmarkFormatError, match=r"coco_pope_random\.json:5: image 'missing\.jpg' not found"):
        load_benchmark("pope", root)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    lenient = load_benchmark("pope", root, strict=False)
    assert len(lenient) == 12 and len(lenient.skipped) == 2
    assert "coco_pope_random.json:6: not a JSON object" in lenient.skipped[1]


def test_mmbench_tsv_rows_and_errors(tmp_path):
    path = fixtures.write_mmbench(str(tmp_path / "mmbench_dev_en.tsv"), questions=2)
    loaded = load_benchmark("mmbench", str(tmp_path))
    assert loaded.layout == "mmbench-tsv-rotated" and len(loaded) == 8
    assert loaded.records[0].hint is None and loaded.records[4].hint == "The picture shows one square."
    assert loaded.records[0].load_image().size == (64, 64)
    assert len(load_benchmark("mmbench", path, circular=False)) == 2
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\t".join(["7", "Q?", "nan", "x", "y", "", "", "E", "cat", "aGVsbG8=", "l2", "dev"]) + "\n")
    with pytest.raises(
        BenchmarkFormatError, match=r"mmbench_dev_en\.tsv:4: field 'answer' must be one of \['A', 'B'\]"
    ):
        load_benchmark("mmbench", path)
    cn = fixtures.write_mmbench(str(tmp_path / "mmbench_dev_cn.tsv"), questions=1, language="cn")
    assert load_benchmark("mmbench_cn", str(tmp_path)).records[0].question == "方块是什么颜色？"
    assert cn.endswith("cn.tsv")


def test_mmbench_circular_copies_are_grouped_not_rotated(tmp_path):
    path = fixtures.write_mmbench(str(tmp_path / "dev.tsv"), questions=2, circular_copies=True)
    loaded = load_benchmark("mmbench", path)
    assert loaded.layout == "mmbench-tsv-circular-copies" and len(loaded) == 8
    assert {r.group for r in loaded.records} == {"0", "1"}
    assert sorted(r.round for r in loaded.records if r.group == "1") == [0, 1, 2, 3]
    assert loaded.records[1].load_image().size == (64, 64)  # image given as the index of an earlier row


def test_seed_json_skips_video_and_checks_fields(tmp_path):
    root = fixtures.write_seed(str(tmp_path), questions=4)
    loaded = load_benchmark("seed", root)
    assert len(loaded) == 4 and len(loaded.skipped) == 1 and "video" in loaded.skipped[0]
    assert {r.subtask for r in loaded.records} == {"Scene Understanding", "Instance Attributes"}
    json_path = os.path.join(root, "SEED-Bench.json")
    data = json.load(open(json_path, encoding="utf-8"))
    del data["questions"][2]["choice_c"]
    json.dump(data, open(json_path, "w", encoding="utf-8"))
    with pytest.raises(BenchmarkFormatError, match=r"questions\[2\]: missing field\(s\) \['choice_c'\]"):
        load_benchmark("seed", root)


def test_lmms_eval_parquet_layout_matches_official(tmp_path):
    datasets = pytest.importorskip("datasets")
    root = fixtures.write_mmbench(str(tmp_path / "official" / "dev.tsv"), questions=2)
    official = load_benchmark("mmbench", root)
    rows = {
        k: [] for k in ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "l2-category")
    }
    seen = set()
    for r in official.records:
        if r.group in seen:
            continue
        seen.add(r.group)
        original = next(x for x in official.records if x.group == r.group and x.round == 0)
        rows["index"].append(int(original.group))
        rows["question"].append(original.question)
        rows["hint"].append(original.hint)
        for k, v in original.options.items():
            rows[k].append(v)
        rows["answer"].append(original.answer)
        rows["category"].append(original.subtask)
        rows["image"].append({"bytes": original.image_bytes, "path": None})
        rows["l2-category"].append("FP-S")
    features = datasets.Features({k: datasets.Value("int64" if k == "index" else "string") for k in rows})
    features["image"] = datasets.Image()
    ds = datasets.Dataset.from_dict(rows, features=features)
    (tmp_path / "hf" / "data").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "hf" / "data" / "dev-00000-of-00001.parquet"))
    # lmms-lab/MMBench has a "test" split without answers beside "dev": dev is the one scored
    test_rows = {k: v[:1] for k, v in rows.items()}
    test_rows["answer"] = [None]
    datasets.Dataset.from_dict(test_rows, features=features).to_parquet(
        str(tmp_path / "hf" / "data" / "test-00000-of-00001.parquet")
    )
    hf = load_benchmark("mmbench", str(tmp_path / "hf"))
    assert hf.layout == "lmms-eval-parquet:dev"
    key = [(r.uid, r.answer, r.options, r.hint, r.image_bytes) for r in hf.records]
    assert key == [(r.uid, r.answer, r.options, r.hint, r.image_bytes) for r in official.records]


def test_limit_keeps_whole_images_and_groups(tmp_path):
    fixtures.write_mme(str(tmp_path / "mme"), images_per_subtask=3, subtasks=("color",))
    records = load_benchmark("mme", str(tmp_path / "mme")).records
    assert len(limit_records(records, 2)) == 4
    path = fixtures.write_mmbench(str(tmp_path / "m.tsv"), questions=3)
    assert len(limit_records(load_benchmark("mmbench", path).records, 1)) == 4


def test_limit_takes_every_subtask_round_robin(tmp_path):
    fixtures.write_pope(str(tmp_path / "pope"), questions_per_split=4)
    records = load_benchmark("pope", str(tmp_path / "pope")).records
    splits = sorted({r.subtask for r in records})
    assert len(splits) == 3
    kept = limit_records(records, 7)
    counts = {split: sum(r.subtask == split for r in kept) for split in splits}
    assert sorted(counts.values()) == [2, 2, 3]  # not the first 7 questions of the first split
    assert kept == [r for r in records if r in kept]  # file order kept
    assert limit_records(records, 100) == list(records)


def _png(colour):
    import io

    buffer = io.BytesIO()
    fixtures.shape_image(colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_lmms_eval_parquet_mme_pope_seed(tmp_path):
    datasets = pytest.importorskip("datasets")
    image = {"bytes": _png("red"), "path": None}
    tables = {
        "mme": {
            "question_id": ["color/1.png", "color/1.png"],
            "image": [image, image],
            "question": ["Is it red? Please answer yes or no.", "Is it blue? Please answer yes or no."],
            "answer": ["Yes", "No"],
            "category": ["color", "color"],
        },
        "pope": {
            "question_id": ["1", "2"],
            "question": ["Is there a square?", "Is there a dog?"],
            "answer": ["yes", "no"],
            "image_source": ["a", "a"],
            "image": [image, image],
            "category": ["random", "adversarial"],
        },
        "seed": {
            "question_id": ["7", "8"],
            "question": ["Colour?", "What happens next?"],
            "answer": ["B", "A"],
            "choice_a": ["blue", "x"],
            "choice_b": ["red", "y"],
            "choice_c": ["green", "z"],
            "choice_d": ["yellow", "w"],
            "data_id": ["x.png", "v.mp4"],
            "data_type": ["image", "video"],
            "question_type_id": [3, 12],
            "image": [[image], [image, image]],
        },
    }
    for name, table in tables.items():
        features = {k: datasets.Value("string") for k in table}
        features["image"] = [datasets.Image()] if name == "seed" else datasets.Image()
        if name == "seed":
            features["question_type_id"] = datasets.Value("int64")
        folder = tmp_path / name / "data"
        folder.mkdir(parents=True)
        datasets.Dataset.from_dict(table, features=datasets.Features(features)).to_parquet(
            str(folder / "test-00000-of-00001.parquet")
        )
        loaded = load_benchmark(name, str(tmp_path / name))
        assert loaded.layout == "lmms-eval-parquet:test"
        assert loaded.records[0].load_image().getpixel((32, 32)) == fixtures.COLOURS["red"]
    mme_records = load_benchmark("mme", str(tmp_path / "mme")).records
    assert [r.answer for r in mme_records] == ["yes", "no"] and len({r.image_id for r in mme_records}) == 1
    pope_records = load_benchmark("pope", str(tmp_path / "pope")).records
    assert [r.subtask for r in pope_records] == ["random", "adversarial"]
    seed_loaded = load_benchmark("seed", str(tmp_path / "seed"))
    (seed_record,) = seed_loaded.records
    assert len(seed_loaded.skipped) == 1 and "video" in seed_loaded.skipped[0]
    assert seed_record.subtask == "Instance Attributes" and seed_record.options["B"] == "red"
    with pytest.raises(BenchmarkFormatError, match="lack \\['index'"):
        load_benchmark("mmbench", str(tmp_path / "pope"))
