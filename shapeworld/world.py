"""The world: a closed vocabulary, difficulty knobs, seeded scene sampling and deterministic Pillow rendering.

A scene is a plain JSON-serialisable dict (its ground truth)::

    {"id": "train-000001", "grid": 3,
     "objects": [{"shape": "circle", "colour": "red", "size": "small", "row": 0, "col": 2,
                  "cx": 0.83, "cy": 0.17, "radius": 0.09}, ...],
     "label": {"text": "cat", "row": 1, "col": 1, "cx": 0.5, "cy": 0.5} | None,
     "marks": [[x0, y0, x1, y1, grey], ...]}          # distractor marks, never mentioned in any text

Objects sit in distinct cells of a 3×3 grid (so every object has a named position such as "top left") with a small
jitter inside the cell; coordinates are fractions of the image side, so one scene renders at any size. No two objects
share the same (shape, colour), so "the red circle" always names one object.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from PIL import Image, ImageDraw, ImageFont

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 70, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 50, 200),
    "orange": (250, 140, 10),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond", "star")
SIZES: tuple[str, ...] = ("small", "large")
LABEL_WORDS: tuple[str, ...] = ("cat", "dog", "sun", "box", "car", "cup", "map", "hat")
GRID = 3
# (row, col) -> (answer phrase, caption phrase)
POSITIONS: dict[tuple[int, int], tuple[str, str]] = {
    (0, 0): ("top left", "at the top left"),
    (0, 1): ("top", "at the top"),
    (0, 2): ("top right", "at the top right"),
    (1, 0): ("left", "on the left"),
    (1, 1): ("center", "in the center"),
    (1, 2): ("right", "on the right"),
    (2, 0): ("bottom left", "at the bottom left"),
    (2, 1): ("bottom", "at the bottom"),
    (2, 2): ("bottom right", "at the bottom right"),
}
BACKGROUND = (128, 128, 128)
# stage-2 question types (implemented in shapeworld.text.QUESTION_TYPES)
QUESTION_TYPE_NAMES: tuple[str, ...] = (
    "count",
    "count_shape",
    "count_colour",
    "colour",
    "shape",
    "position",
    "existence",
    "relation",
    "side",
    "ocr",
    "more",
    "removed",
    "detail",
    "choice",
)
_RADIUS = {"small": 0.28, "large": 0.42, "medium": 0.36}  # fraction of a cell side


class ShapeWorldError(ValueError):
    """A bad argument or an impossible request, with a message naming the field and what was expected."""


@dataclass(frozen=True)
class Difficulty:
    """Knobs that set how hard the world is.

    `min_objects`..`max_objects` objects per scene (1–6), drawn from the first `num_colours` colours and
    `num_shapes` shapes; `vary_size` draws small/large objects (and names the size in captions); `label_prob` is the
    chance that a scene carries a written word (OCR questions); `distractors` is the number of neutral grey marks
    drawn on the background (never mentioned); `jitter` moves objects inside their cell (fraction of a cell);
    `question_types` restricts the stage-2 question types (None = all of `QUESTION_TYPE_NAMES`); a type listed k
    times is asked k times as often; a stage-2 row asks 1–`max_turns` questions (1: one question per row);
    `short_suffix_rate` is the share of short-answer and yes/no questions (stage 0's text and stage 2) that end with
    LLaVA-1.5's "Answer the question using a single word or phrase." — the instruction its benchmark prompts carry.
    """

    min_objects: int = 1
    max_objects: int = 4
    num_colours: int = 6
    num_shapes: int = 4
    vary_size: bool = True
    label_prob: float = 0.25
    distractors: int = 0
    jitter: float = 0.1
    question_types: tuple[str, ...] | None = None
    max_turns: int = 4
    short_suffix_rate: float = 0.5

    def __post_init__(self) -> None:
        if self.question_types is not None:
            object.__setattr__(self, "question_types", tuple(self.question_types))
            unknown = [q for q in self.question_types if q not in QUESTION_TYPE_NAMES]
            if unknown or not self.question_types:
                raise ShapeWorldError(
                    f"question_types must be a non-empty subset of {list(QUESTION_TYPE_NAMES)}, got "
                    f"{list(self.question_types)}"
                )
        if not 1 <= self.min_objects <= self.max_objects <= 6:
            raise ShapeWorldError(
                f"objects per scene must satisfy 1 <= min_objects <= max_objects <= 6, "
                f"got min_objects={self.min_objects}, max_objects={self.max_objects}"
            )
        if not 2 <= self.num_colours <= len(COLOURS):
            raise ShapeWorldError(f"num_colours must be in 2..{len(COLOURS)}, got {self.num_colours}")
        if not 2 <= self.num_shapes <= len(SHAPES):
            raise ShapeWorldError(f"num_shapes must be in 2..{len(SHAPES)}, got {self.num_shapes}")
        if self.num_colours * self.num_shapes < 2 * self.max_objects:
            raise ShapeWorldError(
                f"num_colours * num_shapes must be >= 2 * max_objects so that absent objects exist to ask about, "
                f"got {self.num_colours} * {self.num_shapes} < 2 * {self.max_objects}"
            )
        if not 0.0 <= self.label_prob <= 1.0:
            raise ShapeWorldError(f"label_prob must be in [0, 1], got {self.label_prob}")
        if self.distractors < 0:
            raise ShapeWorldError(f"distractors must be >= 0, got {self.distractors}")
        if not 1 <= self.max_turns <= len(QUESTION_TYPE_NAMES):
            raise ShapeWorldError(f"max_turns must be in 1..{len(QUESTION_TYPE_NAMES)}, got {self.max_turns}")
        if not 0.0 <= self.short_suffix_rate <= 1.0:
            raise ShapeWorldError(f"short_suffix_rate must be in [0, 1], got {self.short_suffix_rate}")
        if not 0.0 <= self.jitter <= 0.2:
            raise ShapeWorldError(f"jitter must be in [0, 0.2] (fraction of a cell), got {self.jitter}")

    @property
    def colours(self) -> tuple[str, ...]:
        return tuple(COLOURS)[: self.num_colours]

    @property
    def shapes(self) -> tuple[str, ...]:
        return SHAPES[: self.num_shapes]

    def to_dict(self) -> dict:
        return asdict(self)


DIFFICULTIES: dict[str, Difficulty] = {
    # what a tiny MAGE learns on CPU in minutes (docs/shapeworld.md, "Difficulty knobs")
    "easy": Difficulty(min_objects=1, max_objects=3, num_colours=5, num_shapes=3, vary_size=False, label_prob=0.0),
    "default": Difficulty(),
    "hard": Difficulty(min_objects=2, max_objects=6, num_colours=6, num_shapes=6, label_prob=0.3, distractors=6),
}


def get_difficulty(difficulty: str | Difficulty | dict | None) -> Difficulty:
    """A `Difficulty` from a preset name, a dict of knobs, an instance or None (= "default")."""
    if difficulty is None:
        return DIFFICULTIES["default"]
    if isinstance(difficulty, Difficulty):
        return difficulty
    if isinstance(difficulty, dict):
        unknown = sorted(set(difficulty) - set(Difficulty.__dataclass_fields__))
        if unknown:
            raise ShapeWorldError(
                f"unknown difficulty knob(s) {unknown}; known: {sorted(Difficulty.__dataclass_fields__)}"
            )
        return Difficulty(**difficulty)
    if difficulty not in DIFFICULTIES:
        raise ShapeWorldError(f"unknown difficulty {difficulty!r}; choose one of {sorted(DIFFICULTIES)}")
    return DIFFICULTIES[difficulty]


@dataclass
class ObjectSpec:
    """A partial object request for `sample_scene`: None fields are drawn at random."""

    shape: str | None = None
    colour: str | None = None
    cell: tuple[int, int] | None = None
    size: str | None = None
    extra: dict = field(default_factory=dict)


def sample_scene(
    rng: random.Random,
    difficulty: Difficulty,
    scene_id: str,
    forced: Sequence[ObjectSpec] = (),
    num_objects: int | None = None,
    avoid_shapes: Sequence[str] = (),
    label: bool | None = None,
) -> dict:
    """A random scene dict (see module docstring).

    `forced` objects are placed first (their given fields kept); the rest are random objects whose shape is not in
    `avoid_shapes`. `num_objects` (default: uniform in the difficulty's range, at least len(forced)) is the total,
    lowered when the constraints leave no distinct (shape, colour) to add.
    `label` forces a written word on (True) or off (False); None draws it with `difficulty.label_prob`.
    """
    n = num_objects if num_objects is not None else rng.randint(difficulty.min_objects, difficulty.max_objects)
    n = max(n, len(forced))
    if label is None:
        label = rng.random() < difficulty.label_prob
    cells_free = [c for c in POSITIONS if c not in {f.cell for f in forced}]
    rng.shuffle(cells_free)
    used_pairs = {(f.shape, f.colour) for f in forced if f.shape and f.colour}
    objects = []
    for number, spec in enumerate(list(forced) + [ObjectSpec() for _ in range(n - len(forced))]):
        shapes = [spec.shape] if spec.shape else [s for s in difficulty.shapes if s not in avoid_shapes]
        colours = [spec.colour] if spec.colour else list(difficulty.colours)
        pairs = [(s, c) for s in shapes for c in colours if (s, c) not in used_pairs or (spec.shape and spec.colour)]
        if not pairs and number >= len(forced):
            break  # a question's constraints (avoided shapes, a small palette) leave no object to add: fewer objects
        if not pairs:
            raise ShapeWorldError(f"scene {scene_id}: no (shape, colour) left for object request {spec}")
        shape, colour = rng.choice(pairs)
        used_pairs.add((shape, colour))
        cell = spec.cell if spec.cell is not None else cells_free.pop()
        size = spec.size or (rng.choice(SIZES) if difficulty.vary_size else "medium")
        objects.append(_place(rng, difficulty, shape, colour, size, cell))
    scene = {"id": scene_id, "grid": GRID, "objects": objects, "label": None, "marks": []}
    if label:
        if not cells_free:
            raise ShapeWorldError(f"scene {scene_id}: no free cell for a written word with {n} objects")
        row, col = cells_free.pop()
        scene["label"] = {
            "text": rng.choice(LABEL_WORDS),
            "row": row,
            "col": col,
            "cx": round((col + 0.5) / GRID, 4),
            "cy": round((row + 0.5) / GRID, 4),
        }
    scene["marks"] = [_mark(rng) for _ in range(difficulty.distractors)]
    return scene


def _place(rng: random.Random, difficulty: Difficulty, shape: str, colour: str, size: str, cell) -> dict:
    row, col = cell
    room = max(0.0, min(difficulty.jitter, 0.48 - _RADIUS[size]))  # the shape stays inside its cell
    jx, jy = (rng.uniform(-room, room) for _ in range(2))
    return {
        "shape": shape,
        "colour": colour,
        "size": size,
        "row": row,
        "col": col,
        "cx": round((col + 0.5 + jx) / GRID, 4),
        "cy": round((row + 0.5 + jy) / GRID, 4),
        "radius": round(_RADIUS[size] / GRID, 4),
    }


def _mark(rng: random.Random) -> list:
    x0, y0 = rng.random(), rng.random()
    length = rng.uniform(0.03, 0.08)
    angle_dx, angle_dy = rng.choice([(1, 0), (0, 1), (0.7, 0.7), (0.7, -0.7)])
    grey = rng.choice([96, 110, 150, 165])
    return [round(x0, 4), round(y0, 4), round(x0 + angle_dx * length, 4), round(y0 + angle_dy * length, 4), grey]


# ---------------------------------------------------------------- rendering


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "triangle":
        return [(cx, cy - r), (cx + 0.95 * r, cy + 0.8 * r), (cx - 0.95 * r, cy + 0.8 * r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.8 * r, cy), (cx, cy + r), (cx - 0.8 * r, cy)]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else 0.45 * r
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    return None


_FONTS: dict[int, object] = {}


def _font(size: int):
    if size not in _FONTS:
        try:
            _FONTS[size] = ImageFont.load_default(size=size)  # FreeType (Pillow >= 10.1 built with FreeType)
        except (TypeError, ImportError, OSError):
            _FONTS[size] = ImageFont.load_default()  # the fixed-size bitmap font
    return _FONTS[size]


def render_scene(scene: dict, image_size: int = 336):
    """The scene drawn as an RGB `PIL.Image` of `image_size`×`image_size` (grey background, filled shapes)."""
    if image_size < 16:
        raise ShapeWorldError(f"image_size must be >= 16 px, got {image_size}")
    s = image_size
    image = Image.new("RGB", (s, s), BACKGROUND)
    draw = ImageDraw.Draw(image)
    width = max(1, s // 100)
    for x0, y0, x1, y1, grey in scene.get("marks", []):
        draw.line([(x0 * s, y0 * s), (x1 * s, y1 * s)], fill=(grey, grey, grey), width=width)
    for obj in scene["objects"]:
        cx, cy, r = obj["cx"] * s, obj["cy"] * s, obj["radius"] * s
        fill = COLOURS[obj["colour"]]
        shape = obj["shape"]
        if shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif shape == "square":
            q = 0.85 * r
            draw.rectangle([cx - q, cy - q, cx + q, cy + q], fill=fill)
        elif shape == "cross":
            t = 0.35 * r
            draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
            draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
        else:
            draw.polygon(_polygon(shape, cx, cy, r), fill=fill)
    label = scene.get("label")
    if label:
        font = _font(max(6, round(s / GRID * 0.3)))
        left, top, right, bottom = draw.textbbox((0, 0), label["text"], font=font)
        x = label["cx"] * s - (left + right) / 2
        y = label["cy"] * s - (top + bottom) / 2
        draw.text((x, y), label["text"], fill=(0, 0, 0), font=font)
    return image


def png_bytes(image) -> bytes:
    """Deterministic PNG bytes (no metadata, fixed compression) of a PIL image."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def scene_png(scene: dict, image_size: int = 336) -> bytes:
    """`png_bytes(render_scene(scene, image_size))`."""
    return png_bytes(render_scene(scene, image_size))


def item_rng(seed: int, part: str, index: int) -> random.Random:
    """The private RNG of one item: a function of (seed, part, index) only, so items are independent and order-free."""
    return random.Random(f"shapeworld:{seed}:{part}:{index}")


__all__ = [
    "BACKGROUND",
    "COLOURS",
    "DIFFICULTIES",
    "GRID",
    "LABEL_WORDS",
    "POSITIONS",
    "QUESTION_TYPE_NAMES",
    "SHAPES",
    "SIZES",
    "Difficulty",
    "ObjectSpec",
    "ShapeWorldError",
    "get_difficulty",
    "item_rng",
    "png_bytes",
    "render_scene",
    "sample_scene",
    "scene_png",
]
