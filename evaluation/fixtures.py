"""Tiny benchmark folders in the official layouts, for tests, the throughput benchmark and smoke runs.

Each image is a grey 64×64 canvas with one coloured square; questions ask about its colour, so a model that sees the
image can answer them. Everything is deterministic from `seed`.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 20, 20), "green": (20, 180, 20), "blue": (20, 20, 220), "yellow": (230, 210, 20)}


def shape_image(colour: str, size: int = 64):
    """A grey `size`×`size` RGB image with one square of `colour` (a key of `COLOURS`)."""
    image = Image.new("RGB", (size, size), (128, 128, 128))
    ImageDraw.Draw(image).rectangle([size // 4, size // 4, 3 * size // 4, 3 * size // 4], fill=COLOURS[colour])
    return image


def _png_bytes(colour: str) -> bytes:
    buffer = io.BytesIO()
    shape_image(colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_mme(
    root: str,
    images_per_subtask: int = 2,
    layout: str = "A",
    seed: int = 0,
    subtasks: tuple[str, ...] = ("color", "existence", "code_reasoning"),
) -> str:
    """MME folders: `layout="A"` (images/ + questions_answer_YES_NO/) or `"B"` (image + .txt side by side)."""
    rng = random.Random(seed)
    for subtask in subtasks:
        image_dir = os.path.join(root, subtask, "images" if layout == "A" else "")
        text_dir = os.path.join(root, subtask, "questions_answer_YES_NO" if layout == "A" else "")
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(text_dir, exist_ok=True)
        for i in range(images_per_subtask):
            colour, other = rng.sample(sorted(COLOURS), 2)
            stem = f"{i:04d}"
            shape_image(colour).save(os.path.join(image_dir, stem + ".png"))
            with open(os.path.join(text_dir, stem + ".txt"), "w", encoding="utf-8") as handle:
                handle.write(f"Is the square {colour}? Please answer yes or no.\tYes\n")
                handle.write(f"Is the square {other}? Please answer yes or no.\tNo\n")
    return root


def write_pope(
    root: str,
    questions_per_split: int = 4,
    seed: int = 0,
    splits: tuple[str, ...] = ("adversarial", "popular", "random"),
) -> str:
    """`coco_pope_<split>.json` (JSON lines) + a `val2014/` image folder."""
    rng = random.Random(seed)
    image_dir = os.path.join(root, "val2014")
    os.makedirs(image_dir, exist_ok=True)
    for split in splits:
        with open(os.path.join(root, f"coco_pope_{split}.json"), "w", encoding="utf-8") as handle:
            for q in range(questions_per_split):
                colour = rng.choice(sorted(COLOURS))
                name = f"COCO_val2014_{split}_{q:06d}.png"
                shape_image(colour).save(os.path.join(image_dir, name))
                asked = colour if q % 2 == 0 else next(c for c in sorted(COLOURS) if c != colour)
                label = "yes" if asked == colour else "no"
                row = {
                    "question_id": q + 1,
                    "image": name,
                    "text": f"Is there a {asked} square in the image?",
                    "label": label,
                }
                handle.write(json.dumps(row) + "\n")
    return root


def write_mmbench(
    path: str, questions: int = 3, seed: int = 0, language: str = "en", circular_copies: bool = False
) -> str:
    """One MMBench TSV (base64 PNGs). With `circular_copies`, rotated copies get index + k·1,000,000 (VLMEvalKit)."""
    rng = random.Random(seed)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "l2-category", "split"]
    rows = []
    for q in range(questions):
        options = rng.sample(sorted(COLOURS), 4)
        answer = rng.randrange(4)
        image = base64.b64encode(_png_bytes(options[answer])).decode()
        question = "What colour is the square?" if language == "en" else "方块是什么颜色？"
        rotations = range(4) if circular_copies else range(1)
        for r in rotations:
            shown = options[r:] + options[:r]
            letter = "ABCD"[(answer - r) % 4]
            image_field = image if r == 0 else str(q)  # VLMEvalKit refers to an earlier row's image by its index
            hint = "The picture shows one square." if q % 2 else "nan"
            rows.append(
                [
                    str(q + r * 1_000_000),
                    question,
                    hint,
                    *shown,
                    letter,
                    "attribute_recognition",
                    image_field,
                    "FP-S",
                    "dev",
                ]
            )
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\t".join(header) + "\n")
        for row in rows:
            handle.write("\t".join(row) + "\n")
    return path


def write_seed(root: str, questions: int = 4, seed: int = 0) -> str:
    """`SEED-Bench.json` + `SEED-Bench-image/` with one video question (skipped by the loader)."""
    rng = random.Random(seed)
    image_dir = os.path.join(root, "SEED-Bench-image")
    os.makedirs(image_dir, exist_ok=True)
    items = []
    for q in range(questions):
        options = rng.sample(sorted(COLOURS), 4)
        answer = rng.randrange(4)
        name = f"{q:05d}.png"
        shape_image(options[answer]).save(os.path.join(image_dir, name))
        items.append(
            {
                "question_id": str(q),
                "question": "What colour is the square?",
                "answer": "ABCD"[answer],
                "data_id": name,
                "data_type": "image",
                "question_type_id": 3 if q % 2 else 1,
                **{f"choice_{c}": options[i] for i, c in enumerate("abcd")},
            }
        )
    items.append(
        {
            "question_id": "v0",
            "question": "What happens?",
            "answer": "A",
            "data_id": "v.mp4",
            "data_type": "video",
            "question_type_id": 10,
            "choice_a": "x",
            "choice_b": "y",
            "choice_c": "z",
            "choice_d": "w",
        }
    )
    question_type = {"Scene Understanding": 1, "Instance Attributes": 3, "Action Recognition": 10}
    with open(os.path.join(root, "SEED-Bench.json"), "w", encoding="utf-8") as handle:
        json.dump({"questions": items, "question_type": question_type}, handle)
    return root


def write_all(root: str, seed: int = 0, size: int = 2) -> dict[str, str]:
    """Every benchmark under `root`; returns `{benchmark: data path}` for `mage eval --data`."""
    paths = {
        "mme": write_mme(os.path.join(root, "MME"), images_per_subtask=size, seed=seed),
        "pope": write_pope(os.path.join(root, "pope"), questions_per_split=2 * size, seed=seed),
        "mmbench": write_mmbench(os.path.join(root, "mmbench", "mmbench_dev_en.tsv"), questions=size + 1, seed=seed),
        "mmbench_cn": write_mmbench(
            os.path.join(root, "mmbench", "mmbench_dev_cn.tsv"), questions=size + 1, seed=seed, language="cn"
        ),
        "seed": write_seed(os.path.join(root, "seed"), questions=2 * size, seed=seed),
    }
    paths["mmbench_cn_dir"] = paths["mmbench_dir"] = os.path.join(root, "mmbench")
    return paths


__all__ = ["COLOURS", "shape_image", "write_all", "write_mmbench", "write_mme", "write_pope", "write_seed"]
