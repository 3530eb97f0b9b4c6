"""ShapeWorld: scenes, rendering, exact text, determinism, manifest, CLI and argument errors."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

import pytest

from shapeworld import (
    COLOURS,
    DIFFICULTIES,
    Difficulty,
    ShapeWorldError,
    caption,
    get_difficulty,
    item_rng,
    render_scene,
    sample_scene,
    text_corpus,
)
from shapeworld.dataset import file_hashes, generate_dataset, write_llava_split, write_tool_dialogues
from shapeworld.text import LLAVA_SHORT_SUFFIX, QUESTION_TYPES, instruction_turns, plural, position


def _scenes(n=200, difficulty="hard", seed=0):
    d = get_difficulty(difficulty)
    return [sample_scene(item_rng(seed, "t", i), d, f"t{i}") for i in range(n)]


def test_scenes_respect_the_difficulty_and_are_json():
    for name, d in DIFFICULTIES.items():
        for scene in _scenes(100, name):
            assert json.loads(json.dumps(scene)) == scene
            n = len(scene["objects"])
            assert d.min_objects <= n <= d.max_objects, name
            pairs = [(o["shape"], o["colour"]) for o in scene["objects"]]
            assert len(set(pairs)) == n, "(shape, colour) must name one object"
            cells = [(o["row"], o["col"]) for o in scene["objects"]]
            if scene["label"]:
                cells.append((scene["label"]["row"], scene["label"]["col"]))
            assert len(set(cells)) == len(cells)
            assert all(o["colour"] in d.colours and o["shape"] in d.shapes for o in scene["objects"])
            assert len(scene["marks"]) == d.distractors


def test_render_matches_ground_truth():
    """The pixel at each object's centre has the object's colour; the size is as asked."""
    for scene in _scenes(60):
        image = render_scene(scene, 96)
        assert image.size == (96, 96) and image.mode == "RGB"
        for obj in scene["objects"]:
            x, y = round(obj["cx"] * 96), round(obj["cy"] * 96)
            assert image.getpixel((x, y)) == COLOURS[obj["colour"]], (scene["id"], obj)
        if scene["label"]:  # the word is drawn in dark pixels inside its own cell, nowhere else
            row, col = scene["label"]["row"], scene["label"]["col"]
            cell = image.crop((col * 32, row * 32, col * 32 + 32, row * 32 + 32))
            assert min(sum(p) for p in cell.getdata()) < 100


def test_caption_names_every_object_and_position():
    for scene in _scenes(50):
        text = caption(scene)
        for obj in scene["objects"]:
            assert f"{obj['colour']} {obj['shape']}" in text
            assert position(obj) in text
        if scene["label"]:
            assert f"the word {scene['label']['text']}" in text


def test_instruction_answers_are_exact():
    """Recompute the answers of checkable question types from the ground truth with independent code."""
    d = get_difficulty("hard")
    checked = 0
    for i, scene in enumerate(_scenes(300)):
        for question, answer in instruction_turns(item_rng(1, "q", i), scene, d, max_turns=len(QUESTION_TYPES)):
            question = question.replace("\nAnswer the question using a single word or phrase.", "")
            objs = scene["objects"]
            if question == "How many shapes are there?":
                assert answer == str(len(objs))
            elif m := re.fullmatch(r"How many (\w+) shapes are there\?", question):
                assert answer == str(sum(o["colour"] == m[1] for o in objs))
            elif m := re.fullmatch(r"How many (\w+) are there\?", question):
                assert answer == str(sum(plural(o["shape"]) == m[1] for o in objs))
            elif m := re.fullmatch(r"Is there an? (\w+) (\w+) in the image\?", question):
                present = any(o["colour"] == m[1] and o["shape"] == m[2] for o in objs)
                assert answer == ("Yes" if present else "No")
            elif m := re.fullmatch(r"Where is the (\w+) (\w+)\?", question):
                (obj,) = [o for o in objs if o["colour"] == m[1] and o["shape"] == m[2]]
                assert answer == position(obj)
            elif question == "What word is written in the image?":
                assert answer == scene["label"]["text"]
            else:
                continue
            checked += 1
    assert checked > 300


def test_no_global_random_state_is_touched(tmp_path):
    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate_dataset(str(tmp_path / "a"), 3, 6, seed=1, image_size=32, n_tools_train=2, n_tools_eval=1)
    assert random.random() == expected


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kwargs = dict(n_train=6, n_eval=8, image_size=32, n_tools_train=4, n_tools_eval=2)
    first = generate_dataset(str(tmp_path / "a"), seed=7, **kwargs)
    second = generate_dataset(str(tmp_path / "b"), seed=7, **kwargs)
    third = generate_dataset(str(tmp_path / "c"), seed=8, **kwargs)
    assert first == second
    assert open(tmp_path / "a" / "manifest.json", "rb").read() == open(tmp_path / "b" / "manifest.json", "rb").read()
    assert first["files"] != third["files"]
    # rerunning into the same folder rewrites it identically
    again = generate_dataset(str(tmp_path / "a"), seed=7, **kwargs)
    assert again == first
    # the manifest's hashes are the files' hashes; no timestamps
    files, folders = file_hashes(str(tmp_path / "a"))
    assert files == first["files"] and folders == first["image_folders"]
    text = open(tmp_path / "a" / "manifest.json").read()
    assert not re.search(r"20\d\d-\d\d-\d\d", text)
    assert first["counts"]["train_scenes"] == 6 and first["counts"]["benchmark_questions"]["mme"] == 16


def test_rerun_with_fewer_items_leaves_no_stale_files(tmp_path):
    generate_dataset(str(tmp_path), 5, 6, image_size=32)
    generate_dataset(str(tmp_path), 2, 6, image_size=32)
    assert sorted(os.listdir(tmp_path / "train" / "images")) == ["000000.png", "000001.png"]


def test_difficulty_knobs_reach_the_images(tmp_path):
    generate_dataset(str(tmp_path), 4, 2, image_size=40, difficulty={"max_objects": 6, "min_objects": 6})
    with open(tmp_path / "train" / "scenes.jsonl") as handle:
        assert all(len(json.loads(line)["scene"]["objects"]) == 6 for line in handle)
    from PIL import Image

    assert Image.open(tmp_path / "train" / "images" / "000000.png").size == (40, 40)


def test_text_corpus_covers_every_generated_word():
    corpus = list(text_corpus(num_scenes=60, seed=0))
    words = set(re.findall(r"[\w']+|[^\w\s]", " ".join(corpus)))
    assert "\nAnswer the question using a single word or phrase." in "\n".join(corpus)
    assert any("请直接回答选项字母" in line for line in corpus)
    assert any(line.startswith('[{"task": ') for line in corpus)
    d = get_difficulty("hard")
    for i, scene in enumerate(_scenes(150, seed=99)):
        texts = [caption(scene)] + [t for qa in instruction_turns(item_rng(9, "c", i), scene, d) for t in qa]
        for text in texts:
            missing = set(re.findall(r"[\w']+|[^\w\s]", text)) - words
            assert not missing, (text, missing)


def test_max_turns_sets_the_questions_per_stage2_row():
    one = Difficulty(max_turns=1)
    rows = [
        instruction_turns(item_rng(2, "turns", i), sample_scene(item_rng(3, "turns", i), one, f"s{i}"), one)
        for i in range(40)
    ]
    assert all(len(turns) == 1 for turns in rows)
    many = Difficulty()
    counts = {
        len(instruction_turns(item_rng(2, "turns", i), sample_scene(item_rng(3, "turns", i), many, f"s{i}"), many))
        for i in range(40)
    }
    assert max(counts) > 1


def test_short_suffix_rate_changes_only_the_suffixes():
    def turns(rate):
        d = Difficulty(short_suffix_rate=rate)
        return [
            instruction_turns(item_rng(4, "sfx", i), sample_scene(item_rng(5, "sfx", i), d, f"s{i}"), d)
            for i in range(60)
        ]

    never, half, always = turns(0.0), turns(0.5), turns(1.0)
    flat = {rate: [qa for row in rows for qa in row] for rate, rows in ((0, never), (0.5, half), (1, always))}
    assert not any(LLAVA_SHORT_SUFFIX in q for q, _ in flat[0])
    assert 0 < sum(LLAVA_SHORT_SUFFIX in q for q, _ in flat[0.5]) < sum(LLAVA_SHORT_SUFFIX in q for q, _ in flat[1])
    # the same questions and answers in the same order, only the suffix differs
    assert [(q.replace(LLAVA_SHORT_SUFFIX, ""), a) for q, a in flat[1]] == flat[0]
    # a one-word answer (yes/no, a colour, a count) to a question asked in the plain style always gets the suffix
    assert all(LLAVA_SHORT_SUFFIX in q for q, a in flat[1] if a in ("Yes", "No") and "\nA." not in q)
    with pytest.raises(ShapeWorldError, match="short_suffix_rate"):
        Difficulty(short_suffix_rate=1.5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: generate_dataset(p, -1, 2), "n_train must be a non-negative integer"),
        (lambda p: generate_dataset(p, 1, -3), "n_eval must be a non-negative integer"),
        (lambda p: generate_dataset(p, 1, 1, image_size=8), "image_size must be >= 16"),
        (lambda p: generate_dataset(p, 1, 1, difficulty="extreme"), "unknown difficulty 'extreme'"),
        (lambda p: generate_dataset(p, 1, 1, difficulty={"max_objetcs": 3}), "unknown difficulty knob"),
        (lambda p: generate_dataset(p, 1, 1, benchmarks=["gqa"]), "unknown benchmark"),
        (lambda p: write_llava_split(p, "test", 1, 0), "unknown split 'test'; choose one of ['train', 'eval']"),
        (lambda p: write_tool_dialogues(os.path.join(p, "x.json"), "dev", 1, 0), "unknown split 'dev'"),
        (lambda p: Difficulty(min_objects=3, max_objects=2), "min_objects <= max_objects"),
        (lambda p: Difficulty(max_turns=0), "max_turns must be in 1.."),
    ],
)
def test_bad_arguments_give_clear_errors(tmp_path, call, message):
    with pytest.raises(ShapeWorldError, match=re.escape(message)):
        call(str(tmp_path / "out"))


def test_unwritable_or_foreign_output_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ShapeWorldError, match="cannot write to --out"):
        generate_dataset(str(blocker / "sub"), 1, 1, image_size=32)
    with pytest.raises(ShapeWorldError, match="exists and is not a directory"):
        generate_dataset(str(blocker), 1, 1, image_size=32)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(ShapeWorldError, match="not empty and holds no ShapeWorld manifest"):
        generate_dataset(str(foreign), 1, 1, image_size=32)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_cli_writes_and_reports_errors(tmp_path):
    from mage_cli.main import main

    out = tmp_path / "cli"
    code = main(
        [
            "data",
            "shapeworld",
            "--out",
            str(out),
            "--train",
            "3",
            "--eval",
            "6",
            "--seed",
            "2",
            "--image-size",
            "32",
            "--max-objects",
            "3",
            "--no-progress",
        ]
    )
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 2 and manifest["image_size"] == 32 and manifest["difficulty"]["max_objects"] == 3
    assert main(["data", "shapeworld", "--out", str(tmp_path / "bad"), "--train", "-1", "--eval", "1"]) == 2


def test_cli_help_lists_the_knobs():
    result = subprocess.run([sys.executable, "-m", "mage_cli.main", "data", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for flag in (
        "--out",
        "--train",
        "--eval",
        "--seed",
        "--image-size",
        "--difficulty",
        "--max-objects",
        "--distractors",
    ):
        assert flag in result.stdout


def test_iter_samples_match_the_written_files(tmp_path):
    from shapeworld import dataset_paths, iter_samples

    generate_dataset(str(tmp_path), 4, 3, seed=11, image_size=32, n_tools_train=1, n_tools_eval=1)
    paths = dataset_paths(str(tmp_path))
    rows = json.load(open(paths["stage2"]))
    captions = json.load(open(paths["stage1"]))
    held_out = json.load(open(paths["eval_stage2"]))
    samples = list(iter_samples("train", 4, seed=11, image_size=32))
    assert [s["conversations"] for s in samples] == [r["conversations"] for r in rows]
    assert [s["caption_conversations"] for s in samples] == [r["conversations"] for r in captions]
    from shapeworld import png_bytes

    assert png_bytes(samples[0]["image"]) == open(tmp_path / "train" / rows[0]["image"], "rb").read()
    assert [s["conversations"] for s in iter_samples("eval", 3, seed=11)] == [r["conversations"] for r in held_out]
    assert os.path.isdir(paths["mme"]) and paths["mmbench_cn"].endswith("mmbench_dev_cn.tsv")
    with pytest.raises(ShapeWorldError, match="no readable ShapeWorld manifest"):
        dataset_paths(str(tmp_path / "nowhere"))


def test_question_types_knob_restricts_stage2(tmp_path):
    from mage_cli.main import main

    out = tmp_path / "qt"
    argv = [
        "data",
        "shapeworld",
        "--out",
        str(out),
        "--train",
        "30",
        "--eval",
        "1",
        "--image-size",
        "32",
        "--question-types",
        "existence",
        "colour",
        "--no-progress",
    ]
    assert main(argv) == 0
    rows = json.loads((out / "train" / "stage2_instructions.json").read_text())
    questions = [
        t["value"].removeprefix("<image>\n").split("\n")[0]
        for r in rows
        for t in r["conversations"]
        if t["from"] == "human"
    ]
    assert questions and all(
        re.fullmatch(r"Is there an? \w+ \w+ in the image\?|What colour is the \w+\?", q)
        or q == "How many shapes are there?"
        for q in questions
    ), questions
    assert json.loads((out / "manifest.json").read_text())["difficulty"]["question_types"] == ["existence", "colour"]
    with pytest.raises(ShapeWorldError, match="question_types must be a non-empty subset"):
        get_difficulty({"question_types": ["colr"]})


def test_bytes_do_not_depend_on_the_process_hash_seed(tmp_path):
    """Same files from two fresh processes with different PYTHONHASHSEED (no set/dict-order dependence)."""
    script = (
        "import sys; from shapeworld import generate_dataset; "
        "generate_dataset(sys.argv[1], 5, 12, seed=4, image_size=32, difficulty='hard')"
    )
    hashes = []
    for hash_seed, name in (("1", "a"), ("2", "b")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True, env=env)
        hashes.append((tmp_path / name / "manifest.json").read_bytes())
    assert hashes[0] == hashes[1]
