"""The offline text-to-image tool: read a ShapeWorld description and draw it with ShapeWorld's renderer.

Understands what ShapeWorld's captions and tool requests say — objects ``[size] colour shape`` (plural ``-s``/``-es``
accepted), cell positions ("at the top left", "on the right", "in the center", ...), one relation between consecutive
objects ("a red circle to the left of a blue square", "above", "below", "to the right of") and a written word ("the
word cat at the bottom"). Anything else in the text is ignored; a text that names no object is an error.

>>> scene = description_to_scene("a red circle to the left of a large blue square")
>>> [(o["colour"], o["shape"], o["size"], o["row"], o["col"]) for o in scene["objects"]]
[('red', 'circle', 'medium', 1, 0), ('blue', 'square', 'large', 1, 2)]
"""

from __future__ import annotations

import random
import re
from typing import Any

from shapeworld.world import COLOURS, GRID, POSITIONS, SHAPES, ObjectSpec, get_difficulty, render_scene, sample_scene

# relation -> (cell of the first object, cell of the second) when neither has an explicit position
_RELATION_CELLS = {
    "left": ((1, 0), (1, 2)),
    "right": ((1, 2), (1, 0)),
    "above": ((0, 1), (2, 1)),
    "below": ((2, 1), (0, 1)),
}
_RELATION_RE = re.compile(r"\b(to the left of|left of|to the right of|right of|above|below|under)\b")
_RELATION_NAME = {
    "to the left of": "left",
    "left of": "left",
    "to the right of": "right",
    "right of": "right",
    "above": "above",
    "below": "below",
    "under": "below",
}
_FILL_ORDER = [(1, 1), (1, 0), (1, 2), (0, 1), (2, 1), (0, 0), (0, 2), (2, 0), (2, 2)]


def _vocabulary() -> tuple[dict, tuple, dict]:
    phrases = {}
    for cell, (answer, caption) in POSITIONS.items():
        phrases[caption] = cell
        for prep in ("at the", "on the", "in the"):
            phrases[f"{prep} {answer}"] = cell
    return COLOURS, SHAPES, phrases


def description_to_scene(text: str) -> dict[str, Any]:
    """A ShapeWorld scene dict (``shapeworld.world`` format) for the objects ``text`` describes."""
    colours, shapes, phrases = _vocabulary()
    low = " " + re.sub(r"\s+", " ", str(text).lower()) + " "
    obj_re = re.compile(
        r"\b(?:(small|large|big|medium)\s+)?(" + "|".join(colours) + r")\s+(" + "|".join(shapes) + r")(?:e?s)?\b"
    )
    pos_re = re.compile(r"(" + "|".join(sorted(map(re.escape, phrases), key=len, reverse=True)) + r")\b")
    mentions = list(obj_re.finditer(low))
    if not mentions:
        raise ValueError(
            f"nothing to draw: the text names no '[size] colour shape' (colours {list(colours)}, "
            f"shapes {list(shapes)}): {str(text)[:100]!r}"
        )
    objects: list[dict[str, Any]] = []
    seen = set()
    for j, m in enumerate(mentions):
        size, colour, shape = m.group(1), m.group(2), m.group(3)
        if (shape, colour) in seen or len(objects) == GRID * GRID:
            continue
        seen.add((shape, colour))
        end = mentions[j + 1].start() if j + 1 < len(mentions) else len(low)
        between = low[m.end() : end]
        pos = pos_re.search(between)
        rel = _RELATION_RE.search(between)
        objects.append(
            {
                "shape": shape,
                "colour": colour,
                "size": {"big": "large", None: "medium"}.get(size, size),
                "cell": phrases[pos.group(1)] if pos and (not rel or pos.start() < rel.start()) else None,
                "relation": _RELATION_NAME[rel.group(1)] if rel and j + 1 < len(mentions) else None,
            }
        )
    for a, b in zip(objects, objects[1:]):
        if a["relation"] and a["cell"] is None and b["cell"] is None:
            a["cell"], b["cell"] = _RELATION_CELLS[a["relation"]]
    used = {o["cell"] for o in objects if o["cell"] is not None}
    taken: set = set()
    for o in objects:  # a repeated explicit cell moves to the next free one
        if o["cell"] is not None and o["cell"] in taken:
            o["cell"] = None
        taken.add(o["cell"])
    free = [c for c in _FILL_ORDER if c not in used]
    for o in objects:
        if o["cell"] is None:
            o["cell"] = free.pop(0)
    label = None
    word = re.search(r"\bthe word (\w+)", low)
    if word:
        after = low[word.end() :]
        pos = pos_re.match(after.lstrip())
        cell = phrases[pos.group(1)] if pos else None
        free = [c for c in _FILL_ORDER if c not in {o["cell"] for o in objects}]
        if cell is None or cell in {o["cell"] for o in objects}:
            cell = free[0] if free else None
        if cell is not None:
            label = {
                "text": word.group(1),
                "row": cell[0],
                "col": cell[1],
                "cx": round((cell[1] + 0.5) / GRID, 4),
                "cy": round((cell[0] + 0.5) / GRID, 4),
            }
    difficulty = get_difficulty({"jitter": 0.0, "distractors": 0})
    forced = [ObjectSpec(shape=o["shape"], colour=o["colour"], cell=o["cell"], size=o["size"]) for o in objects]
    scene = sample_scene(random.Random(0), difficulty, "tool", forced=forced, num_objects=len(forced), label=False)
    scene["label"] = label
    return scene


def render_description(text: str, image_size: int = 336):
    """``shapeworld.render_scene(description_to_scene(text), image_size)`` — an RGB ``PIL.Image``."""
    return render_scene(description_to_scene(text), image_size)


__all__ = ["description_to_scene", "render_description"]
