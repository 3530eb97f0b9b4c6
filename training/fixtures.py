"""Tiny LLaVA-format data sets written on the fly (tests, smoke runs, the demo): coloured shapes on grey with
exact captions and questions. Deterministic from `seed`; nothing is downloaded."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle")
VOCABULARY = (
    "What colour is the shape? Which shape is it? Is there a red shape? Describe the image briefly, then read it "
    "aloud. a red green blue yellow square circle on grey yes no Say hello. hello there "
    '[{"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "<resource>-0"}}, '
    '{"task": "text-to-speech", "id": 1, "dep": [0], "args": {"text": "<GENERATED>-0"}}]'
)


def draw(colour: str, shape: str, size: int = 64, position: tuple[int, int] = (8, 8)):
    image = Image.new("RGB", (size, size), (128, 128, 128))
    box = [position[0], position[1], position[0] + size // 3, position[1] + size // 3]
    painter = ImageDraw.Draw(image)
    (painter.rectangle if shape == "square" else painter.ellipse)(box, fill=COLOURS[colour])
    return image


def write_tiny_llava_dataset(
    folder: str | Path, num_images: int = 16, num_text_only: int = 4, stage: int = 2, seed: int = 0
) -> Path:
    """Write `folder/data.json` + `folder/images/*.png`: stage 1 → caption rows; stage 2 → chat rows (1-2 turns)
    mixed with text-only rows; stage 3 → requests answered with a JSON tool plan (HuggingGPT style). Returns the
    JSON path."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for index in range(num_images):
        colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
        position = (rng.randrange(0, 40), rng.randrange(0, 40))
        name = f"images/{index:04d}.png"
        draw(colour, shape, position=position).save(folder / name)
        if stage == 1:
            turns = [("<image>", f"a {colour} {shape} on grey")]
        elif stage == 3:
            plan = [
                {"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "<resource>-0"}},
                {"task": "text-to-speech", "id": 1, "dep": [0], "args": {"text": "<GENERATED>-0"}},
            ]
            turns = [("<image>\nDescribe the image briefly, then read it aloud.", json.dumps(plan))]
        else:
            turns = [("<image>\nWhat colour is the shape?", colour)]
            if rng.random() < 0.5:
                turns.append(("Which shape is it?", f"a {shape}"))
        rows.append({"id": f"img{index}", "image": name, "conversations": _turns(turns)})
    if stage == 2:
        for index in range(num_text_only):
            rows.append(
                {
                    "id": f"txt{index}",
                    "conversations": _turns([("Say hello.", " ".join(["hello there"] * (index % 2 + 1)))]),
                }
            )
        rng.shuffle(rows)
    path = folder / "data.json"
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


def _turns(pairs: list[tuple[str, str]]) -> list[dict]:
    return [turn for q, a in pairs for turn in ({"from": "human", "value": q}, {"from": "gpt", "value": a})]


__all__ = ["write_tiny_llava_dataset", "draw", "VOCABULARY", "COLOURS", "SHAPES"]
