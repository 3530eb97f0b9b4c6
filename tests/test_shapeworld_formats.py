"""ShapeWorld files read back by minimal readers written from the official format descriptions (not the writer's code).

- MME (MME_Benchmark_release_version): per subtask folder, either images/ + questions_answer_YES_NO/ or image and
  same-stem .txt side by side; each .txt line is "question<TAB>Yes|No"; two questions per image.
- POPE: coco_pope_<split>.json holds one JSON object per line with question_id, image, text, label.
- MMBench: a TSV with a header row; image = base64 of the picture; answer = option letter.
- SEED-Bench: JSON {"questions": [...], "question_type": {...}}; data_id = the image file name.
- LLaVA: a JSON list of {"id", "image", "conversations": [{"from", "value"}]}.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import sys

import pytest
from PIL import Image

from shapeworld.dataset import generate_dataset
from shapeworld.world import scene_png

N_TRAIN, N_EVAL, SEED, SIZE = 12, 16, 5, 48


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sw"))
    generate_dataset(root, N_TRAIN, N_EVAL, seed=SEED, image_size=SIZE, n_tools_train=5, n_tools_eval=3)
    return root


def ground_truth(out: str, benchmark: str) -> list[dict]:
    with open(os.path.join(out, "benchmarks", "ground_truth", f"{benchmark}.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def read_png(path_or_bytes) -> Image.Image:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else open(path_or_bytes, "rb").read()
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# ---------------------------------------------------------------- minimal official-format readers


def read_mme(root: str) -> dict[str, list[tuple[str, str, str]]]:
    """{subtask: [(image path, question, answer)]} for either release layout."""
    release = os.path.join(root, "MME_Benchmark_release_version")
    out = {}
    for subtask in sorted(os.listdir(release)):
        folder = os.path.join(release, subtask)
        if os.path.isdir(os.path.join(folder, "questions_answer_YES_NO")):
            qa_dir, image_dir = os.path.join(folder, "questions_answer_YES_NO"), os.path.join(folder, "images")
        else:
            qa_dir = image_dir = folder
        rows = []
        for name in sorted(n for n in os.listdir(qa_dir) if n.endswith(".txt")):
            stem = name[:-4]
            images = [n for n in os.listdir(image_dir) if os.path.splitext(n)[0] == stem and not n.endswith(".txt")]
            assert len(images) == 1, f"{subtask}/{name}: expected one image named {stem}.*, found {images}"
            with open(os.path.join(qa_dir, name), encoding="utf-8") as handle:
                for line in handle.read().splitlines():
                    question, answer = line.split("\t")
                    rows.append((os.path.join(image_dir, images[0]), question, answer))
        out[subtask] = rows
    return out


def read_pope(root: str) -> dict[str, list[dict]]:
    out = {}
    for name in sorted(os.listdir(root)):
        if name.startswith("coco_pope_") and name.endswith(".json"):
            with open(os.path.join(root, name), encoding="utf-8") as handle:
                out[name[len("coco_pope_") : -len(".json")]] = [json.loads(line) for line in handle if line.strip()]
    return out


def read_tsv(path: str) -> list[dict]:
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


# ---------------------------------------------------------------- tests


def test_mme_round_trip(out):
    mme = read_mme(os.path.join(out, "benchmarks", "MME"))
    assert sorted(mme) == sorted(["existence", "count", "position", "color", "OCR", "numerical_calculation"])
    truth = {item["index"]: item for item in ground_truth(out, "mme")}
    seen = 0
    for subtask, rows in mme.items():
        assert len(rows) % 2 == 0
        for k in range(0, len(rows), 2):
            (image_a, q_yes, a_yes), (image_b, q_no, a_no) = rows[k], rows[k + 1]
            assert image_a == image_b and (a_yes, a_no) == ("Yes", "No")
            assert q_yes.endswith(" Please answer yes or no.") and q_no.endswith(" Please answer yes or no.")
            item = truth[int(os.path.basename(image_a).split(".")[0])]
            assert item["subtask"] == subtask
            assert [q["question"] for q in item["questions"]] == [q_yes, q_no]
            assert open(image_a, "rb").read() == scene_png(item["scene"], SIZE)
            seen += 1
    assert seen == N_EVAL


def test_pope_round_trip(out):
    root = os.path.join(out, "benchmarks", "pope")
    pope = read_pope(root)
    assert sorted(pope) == ["adversarial", "popular", "random"]
    truth = ground_truth(out, "pope")
    for split, rows in pope.items():
        assert [r["question_id"] for r in rows] == list(range(1, len(rows) + 1))
        expected = [(q["question"], q["answer"]) for item in truth for q in item["splits"][split]]
        assert [(r["text"], r["label"]) for r in rows] == expected
        for row in rows:
            assert set(row) == {"question_id", "image", "text", "label"}
            assert row["label"] in ("yes", "no")
            assert os.path.isfile(os.path.join(root, "val2014", row["image"]))
    # the same images and positives in every split, as in POPE
    yes = {split: [(r["image"], r["text"]) for r in rows if r["label"] == "yes"] for split, rows in pope.items()}
    assert yes["random"] == yes["popular"] == yes["adversarial"]


def test_mmbench_round_trip(out):
    folder = os.path.join(out, "benchmarks", "mmbench")
    en, cn = read_tsv(os.path.join(folder, "mmbench_dev_en.tsv")), read_tsv(os.path.join(folder, "mmbench_dev_cn.tsv"))
    columns = [
        "index",
        "question",
        "hint",
        "A",
        "B",
        "C",
        "D",
        "answer",
        "category",
        "image",
        "source",
        "l2-category",
        "comment",
        "split",
    ]
    with open(os.path.join(folder, "mmbench_dev_en.tsv"), encoding="utf-8") as handle:
        assert handle.readline().rstrip("\n").split("\t") == columns
    truth = ground_truth(out, "mmbench")
    assert len(en) == len(cn) == len(truth) == N_EVAL
    for row_en, row_cn, item in zip(en, cn, truth):
        assert row_en["index"] == row_cn["index"] == str(item["index"])
        assert row_en["answer"] == row_cn["answer"] == item["answer"]
        assert row_en["image"] == row_cn["image"]
        assert row_en["category"] == item["category"] and row_en["split"] == "dev"
        assert [row_en[c] for c in "ABCD"] == item["options"]
        assert row_en["question"] == item["question"] and row_cn["question"] == item["question_cn"]
        assert any("\u4e00" <= ch <= "\u9fff" for ch in row_cn["question"] + row_cn["A"])
        image = base64.b64decode(row_en["image"], validate=True)
        assert image == scene_png(item["scene"], SIZE)
        assert read_png(image).size == (SIZE, SIZE)
    categories = {row["category"] for row in en}
    assert {"spatial_relationship", "object_localization", "physical_relation"} <= categories


def test_seed_round_trip(out):
    root = os.path.join(out, "benchmarks", "seed")
    with open(os.path.join(root, "SEED-Bench.json"), encoding="utf-8") as handle:
        data = json.load(handle)
    assert data["question_type"]["Spatial Relation"] == 6 and data["question_type"]["Instance Location"] == 4
    assert sorted(data["question_type"].values()) == list(range(1, 10))
    truth = ground_truth(out, "seed")
    assert len(data["questions"]) == len(truth) == N_EVAL
    for question, item in zip(data["questions"], truth):
        needed = {
            "question_id",
            "question",
            "choice_a",
            "choice_b",
            "choice_c",
            "choice_d",
            "answer",
            "data_id",
            "data_type",
            "question_type_id",
        }
        assert needed <= set(question)
        assert question["data_type"] == "image" and question["answer"] in "ABCD"
        assert question["question_type_id"] in data["question_type"].values()
        assert [question[f"choice_{c}"] for c in "abcd"] == item["options"]
        path = os.path.join(root, "SEED-Bench-image", question["data_id"])
        assert open(path, "rb").read() == scene_png(item["scene"], SIZE)


def test_llava_files_round_trip(out):
    for rel, first_has_image in [
        ("train/stage1_captions.json", True),
        ("train/stage2_instructions.json", True),
        ("eval/stage2_instructions.json", True),
        ("train/stage3_tools.json", False),
    ]:
        path = os.path.join(out, rel)
        with open(path, encoding="utf-8") as handle:
            rows = json.load(handle)
        assert isinstance(rows, list) and rows
        for row in rows:
            turns = [t for t in row["conversations"] if t["from"] != "system"]
            assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
            assert all(isinstance(t["value"], str) and t["value"] for t in turns)
            if first_has_image:
                assert turns[0]["value"].startswith("<image>\n")
                assert sum(t["value"].count("<image>") for t in turns) == 1
                assert os.path.isfile(os.path.join(os.path.dirname(path), row["image"]))
            else:
                assert "image" not in row and not any("<image>" in t["value"] for t in turns)


def test_stage1_caption_is_the_scene_caption(out):
    from shapeworld.text import caption

    with open(os.path.join(out, "train", "stage1_captions.json"), encoding="utf-8") as handle:
        rows = json.load(handle)
    with open(os.path.join(out, "train", "scenes.jsonl"), encoding="utf-8") as handle:
        scenes = [json.loads(line) for line in handle]
    for row, truth in zip(rows, scenes):
        assert row["image"] == truth["image"]
        assert row["conversations"][1]["value"] == caption(truth["scene"])


def test_project_loaders_read_the_files(out):
    """The evaluation and training loaders of this project accept the files unchanged (when installed)."""
    mme = pytest.importorskip("evaluation.mme")
    from evaluation.mmbench import load_mmbench
    from evaluation.pope import load_pope
    from evaluation.seed import load_seed

    assert len(mme.load_mme(os.path.join(out, "benchmarks", "MME")).records) == 2 * N_EVAL
    assert len(load_pope(os.path.join(out, "benchmarks", "pope")).records) > 0
    assert len(load_mmbench(os.path.join(out, "benchmarks", "mmbench"), "mmbench_cn", circular=False).records) == N_EVAL
    assert len(load_seed(os.path.join(out, "benchmarks", "seed")).records) == N_EVAL
