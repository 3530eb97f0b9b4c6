"""The benchmark items of ShapeWorld, one builder per benchmark family: MME yes/no pairs (`mme_item`), POPE images with
their three splits (`pope_items`), MMBench questions in EN and CN (`mmbench_item`) and SEED-Bench image questions
(`seed_item`). An item is a scene and its questions, options and answers, without pixels.

Items are built "question first" (shapeworld/benchmarks.py says how and which files they become). The streams that
number and seed the items (`benchmark_items`), the prompt texts and the file writers are in shapeworld/benchmarks.py,
which re-exports these names.
"""

from __future__ import annotations

import random
from collections import Counter

from .text import (
    COLOURS_CN,
    MME_SUFFIX,
    POSITIONS_CN,
    RELATIONS,
    RELATIONS_CN,
    SHAPES_CN,
    article,
    caption,
    name,
    name_cn,
    plural,
    position,
    relation_phrase,
)
from .world import LABEL_WORDS, POSITIONS, Difficulty, ObjectSpec, ShapeWorldError, item_rng, sample_scene

MME_SUBTASKS = ("existence", "count", "position", "color", "OCR", "numerical_calculation")
POPE_SPLITS = ("random", "popular", "adversarial")
MMBENCH_CATEGORIES = {  # leaf category -> l2-category (MMBench's names)
    "object_localization": "finegrained_perception (instance-level)",
    "attribute_recognition": "finegrained_perception (instance-level)",
    "OCR": "finegrained_perception (instance-level)",
    "spatial_relationship": "finegrained_perception (cross-instance)",
    "physical_relation": "relation_reasoning",
}
SEED_DIMENSIONS = {
    "Scene Understanding": 1,
    "Instance Identity": 2,
    "Instance Attributes": 3,
    "Instance Location": 4,
    "Instances Counting": 5,
    "Spatial Relation": 6,
    "Instance Interaction": 7,
    "Visual Reasoning": 8,
    "Text Understanding": 9,
}
SEED_USED = (1, 2, 3, 4, 5, 6, 8, 9)  # 7 (interaction) has no meaning among still shapes
SIDES = {"left": ("col", 0), "right": ("col", 2), "top": ("row", 0), "bottom": ("row", 2)}
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top", "above": "below", "below": "above"}


def _pick_pair(rng: random.Random, d: Difficulty) -> tuple[str, str]:
    return rng.choice(d.shapes), rng.choice(d.colours)


def _other(rng: random.Random, pool, value):
    return rng.choice([p for p in pool if p != value])


def _related_cells(rng: random.Random, relation: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Cells (a, b) in the same row/column with `a` `relation` `b` (left/right/above/below)."""
    fixed = rng.randrange(3)
    first, second = sorted(rng.sample(range(3), 2))
    if relation in ("left", "right"):
        a, b = (fixed, first), (fixed, second)
    else:
        a, b = (first, fixed), (second, fixed)
    return (a, b) if relation in ("left", "above") else (b, a)


def _two_objects(rng, d, cells) -> list[ObjectSpec]:
    pairs = rng.sample([(s, c) for s in d.shapes for c in d.colours], 2)
    return [ObjectSpec(shape=s, colour=c, cell=cell) for (s, c), cell in zip(pairs, cells)]


def _count_scene(rng, d, scene_id, counts: dict[str, int]) -> dict:
    forced = []
    colours_left = {shape: rng.sample(list(d.colours), n) for shape, n in counts.items()}
    for shape, colours in colours_left.items():
        forced += [ObjectSpec(shape=shape, colour=c) for c in colours]
    total = max(len(forced), rng.randint(d.min_objects, d.max_objects))
    return sample_scene(rng, d, scene_id, forced=forced, num_objects=total, avoid_shapes=list(counts), label=False)


# ---------------------------------------------------------------- MME (yes/no pairs)


def _yes_no(question: str, yes_value: str, no_value: str, template: str) -> list[dict]:
    return [
        {"question": question.format(yes_value) + MME_SUFFIX, "answer": "yes", "template": template},
        {"question": question.format(no_value) + MME_SUFFIX, "answer": "no", "template": template},
    ]


def mme_item(rng: random.Random, d: Difficulty, scene_id: str, subtask: str) -> dict:
    """One MME image: `{"scene", "subtask", "questions": [yes question, no question]}`."""
    if subtask == "existence":
        scene = sample_scene(rng, d, scene_id, label=False)
        present = {(o["shape"], o["colour"]) for o in scene["objects"]}
        absent = [(s, c) for s in d.shapes for c in d.colours if (s, c) not in present]
        yes, no = rng.choice(sorted(present)), rng.choice(absent)
        questions = [
            {
                "question": f"Is there {article(c)} {c} {s} in this image?{MME_SUFFIX}",
                "answer": a,
                "template": "existence",
            }
            for (s, c), a in ((yes, "yes"), (no, "no"))
        ]
    elif subtask == "count":
        shape, top = rng.choice(d.shapes), min(3, d.num_colours, d.max_objects)
        n = rng.randint(0, top)
        scene = _count_scene(rng, d, scene_id, {shape: n})
        m = _other(rng, range(top + 1), n)
        questions = _yes_no(f"Is the number of {plural(shape)} in this image {{}}?", str(n), str(m), "count")
    elif subtask == "position":
        if rng.random() < 0.5:
            side = rng.choice(list(SIDES))
            axis, value = SIDES[side]
            cell = (value, rng.randrange(3)) if axis == "row" else (rng.randrange(3), value)
            shape, colour = _pick_pair(rng, d)
            scene = sample_scene(rng, d, scene_id, forced=[ObjectSpec(shape, colour, cell)], label=False)
            questions = _yes_no(
                f"Is the {colour} {shape} on the {{}} side of this image?", side, OPPOSITE[side], "position-absolute"
            )
        else:
            relation = rng.choice(RELATIONS)
            forced = _two_objects(rng, d, _related_cells(rng, relation))
            scene = sample_scene(rng, d, scene_id, forced=forced, label=False)
            a, b = scene["objects"][:2]
            questions = _yes_no(
                f"Is the {name(a)} {{}} the {name(b)} in this image?",
                relation_phrase(relation),
                relation_phrase(OPPOSITE.get(relation, relation)),
                "position-relative",
            )
    elif subtask == "color":
        shape, colour = _pick_pair(rng, d)
        scene = sample_scene(rng, d, scene_id, forced=[ObjectSpec(shape, colour)], avoid_shapes=[shape], label=False)
        questions = _yes_no(f"Is the {shape} in this image {{}}?", colour, _other(rng, d.colours, colour), "color")
    elif subtask == "OCR":
        scene = sample_scene(rng, d, scene_id, num_objects=rng.randint(d.min_objects, d.max_objects), label=True)
        word = scene["label"]["text"]
        questions = _yes_no('Is the word "{}" written in this image?', word, _other(rng, LABEL_WORDS, word), "OCR")
    elif subtask == "numerical_calculation":
        a, b = rng.sample(list(d.shapes), 2)
        top, cap = min(4, d.max_objects), d.num_colours
        total = rng.randint(0, top)
        na = rng.randint(max(0, total - cap), min(total, cap))
        scene = _count_scene(rng, d, scene_id, {a: na, b: total - na})
        m = _other(rng, range(top + 1), total)
        questions = _yes_no(
            f"Is the number of {plural(a)} plus the number of {plural(b)} in this image equal to {{}}?",
            str(total),
            str(m),
            "numerical_calculation",
        )
    else:
        raise ShapeWorldError(f"unknown MME subtask {subtask!r}; ShapeWorld writes {list(MME_SUBTASKS)}")
    return {"scene": scene, "subtask": subtask, "questions": questions}


# ---------------------------------------------------------------- POPE


def pope_items(n: int, seed: int, d: Difficulty) -> list[dict]:
    """`n` POPE images, each `{"scene", "splits": {split: [question dicts]}}`; negatives need split-wide statistics."""
    scenes, rngs = [], []
    for i in range(n):
        rng = item_rng(seed, "pope", i)
        count = rng.randint(max(d.min_objects, min(3, d.max_objects)), d.max_objects)
        scenes.append(sample_scene(rng, d, f"pope-{i:06d}", num_objects=count, label=False))
        rngs.append(rng)
    frequency, cooccur = Counter(), Counter()
    for scene in scenes:
        pairs = [(o["shape"], o["colour"]) for o in scene["objects"]]
        frequency.update(pairs)
        cooccur.update((p, q) for p in pairs for q in pairs if p != q)
    everything = [(s, c) for s in d.shapes for c in d.colours]
    items = []
    for scene, rng in zip(scenes, rngs):
        present = [(o["shape"], o["colour"]) for o in scene["objects"]]
        k = min(3, len(present))
        positives = rng.sample(present, k)
        absent = [p for p in everything if p not in present]
        negatives = {
            "random": rng.sample(absent, min(k, len(absent))),
            "popular": _weighted_sample(rng, absent, [frequency[p] + 1 for p in absent], k),
            "adversarial": _adversarial(rng, absent, present, cooccur, k),
        }
        splits = {}
        for split in POPE_SPLITS:
            rows = [(p, "yes") for p in positives] + [(p, "no") for p in negatives[split]]
            splits[split] = [
                {"question": f"Is there {article(c)} {c} {s} in the image?", "answer": label, "template": "pope"}
                for (s, c), label in rows
            ]
        items.append({"scene": scene, "splits": splits})
    return items


def _weighted_sample(rng: random.Random, pool: list, weights: list[float], k: int) -> list:
    """`k` distinct elements of `pool`, each draw in proportion to its weight."""
    pool, weights, out = list(pool), list(weights), []
    for _ in range(min(k, len(pool))):
        index = rng.choices(range(len(pool)), weights=weights)[0]
        out.append(pool.pop(index))
        weights.pop(index)
    return out


def _adversarial(rng: random.Random, absent: list, present: list, cooccur: Counter, k: int) -> list:
    """`k` confusable absent objects: those sharing a shape or colour with a present one (others only if too few),
    drawn in proportion to 1 + their co-occurrence count with the present objects."""
    similar = [p for p in absent if any(p[0] == q[0] or p[1] == q[1] for q in present)]
    rest = [p for p in absent if p not in similar]
    weight = lambda p: 1 + sum(cooccur[(q, p)] for q in present)  # noqa: E731
    chosen = _weighted_sample(rng, similar, [weight(p) for p in similar], k)
    return chosen + _weighted_sample(rng, rest, [weight(p) for p in rest], k - len(chosen))


# ---------------------------------------------------------------- multiple choice (MMBench, SEED)


def _options(rng, correct: str, pool, slot: int) -> tuple[list[str], int]:
    """Up to 4 distinct options from `pool`, `correct` at `slot` (uniform among the options when fewer than 4)."""
    distinct = sorted({p for p in pool if p != correct})
    others = rng.sample(distinct, min(3, len(distinct)))
    if len(others) < 3:
        slot = rng.randrange(len(others) + 1)
    return others[:slot] + [correct] + others[slot:], slot


def _mc(question, options, slot, template, scene, question_cn=None, options_cn=None, **extra) -> dict:
    item = {"scene": scene, "question": question, "options": options, "answer": "ABCD"[slot], "template": template}
    if question_cn is not None:
        item.update(question_cn=question_cn, options_cn=options_cn)
    item.update(extra)
    return item


def mmbench_item(rng: random.Random, d: Difficulty, scene_id: str, category: str, slot: int) -> dict:
    """One MMBench question (EN and CN text) of `category`; the correct option goes to `slot` (0-3)."""
    positions = [p for p, _ in POSITIONS.values()]
    if category == "object_localization":
        shape, colour = _pick_pair(rng, d)
        cell = rng.choice(list(POSITIONS))
        scene = sample_scene(rng, d, scene_id, forced=[ObjectSpec(shape, colour, cell)], label=False)
        obj = scene["objects"][0]
        options, slot = _options(rng, position(obj), positions, slot)
        question, question_cn = f"Where is the {name(obj)} in the image?", f"{name_cn(obj)}在图像的什么位置？"
        options_cn = [POSITIONS_CN[o] for o in options]
    elif category == "attribute_recognition":
        shape, colour = _pick_pair(rng, d)
        scene = sample_scene(rng, d, scene_id, forced=[ObjectSpec(shape, colour)], avoid_shapes=[shape], label=False)
        options, slot = _options(rng, colour, d.colours, slot)
        question, question_cn = f"What colour is the {shape}?", f"{SHAPES_CN[shape]}是什么颜色？"
        options_cn = [COLOURS_CN[o] for o in options]
    elif category == "OCR":
        scene = sample_scene(rng, d, scene_id, num_objects=rng.randint(d.min_objects, d.max_objects), label=True)
        options, slot = _options(rng, scene["label"]["text"], LABEL_WORDS, slot)
        question, question_cn, options_cn = "What word is written in the image?", "图像中写的是什么词？", list(options)
    elif category == "spatial_relationship":
        relation = rng.choice(RELATIONS)
        scene = sample_scene(rng, d, scene_id, forced=_two_objects(rng, d, _related_cells(rng, relation)), label=False)
        a, b = scene["objects"][:2]
        options, slot = _options(rng, relation, RELATIONS, slot)
        question, question_cn = (
            f"Where is the {name(a)} relative to the {name(b)}?",
            f"{name_cn(a)}在{name_cn(b)}的哪一边？",
        )
        options_cn = [RELATIONS_CN[o] for o in options]
    elif category == "physical_relation":
        relation = rng.choice(("above", "below"))
        row = rng.randrange(2)
        col = rng.randrange(3)
        cells = ((row, col), (row + 1, col)) if relation == "above" else ((row + 1, col), (row, col))
        scene = sample_scene(rng, d, scene_id, forced=_two_objects(rng, d, cells), label=False)
        a, b = scene["objects"][:2]  # a is directly `relation` b
        pool = [f"{c} {s}" for s in d.shapes for c in d.colours if f"{c} {s}" != name(b)]
        options, slot = _options(rng, name(a), pool, slot)
        where = "directly above" if relation == "above" else "directly below"
        where_cn = "正上方" if relation == "above" else "正下方"
        to_cn = {f"{c} {s}": COLOURS_CN[c] + SHAPES_CN[s] for s in d.shapes for c in d.colours}
        question, question_cn = f"Which shape is {where} the {name(b)}?", f"{name_cn(b)}的{where_cn}是哪个形状？"
        options_cn = [to_cn[o] for o in options]
    else:
        raise ShapeWorldError(f"unknown MMBench category {category!r}; ShapeWorld writes {list(MMBENCH_CATEGORIES)}")
    return _mc(question, options, slot, category, scene, question_cn, options_cn)


def seed_item(rng: random.Random, d: Difficulty, scene_id: str, dimension: int, slot: int) -> dict:
    """One SEED-Bench image question of `dimension` (question_type_id); correct option at `slot`."""
    if dimension == 1:
        scene = sample_scene(rng, d, scene_id, label=False)
        count = len(scene["objects"])
        pool = set()
        for k in range(40):  # captions of independent scenes with as many objects
            pool.add(caption(sample_scene(rng, d, f"{scene_id}-other{k}", num_objects=count, label=False)))
            if len(pool - {caption(scene)}) >= 3:
                break
        options, slot = _options(rng, caption(scene), pool, slot)
        return _mc("Which description matches the image?", options, slot, "scene", scene, dimension=dimension)
    if dimension == 2:
        shape, colour = _pick_pair(rng, d)
        scene = _unique_colour(rng, d, scene_id, shape, colour)
        options, slot = _options(rng, shape, d.shapes, slot)
        return _mc(f"What shape is the {colour} object?", options, slot, "identity", scene, dimension=dimension)
    if dimension == 3:
        item = mmbench_item(rng, d, scene_id, "attribute_recognition", slot)
    elif dimension == 4:
        item = mmbench_item(rng, d, scene_id, "object_localization", slot)
    elif dimension == 6:
        item = mmbench_item(rng, d, scene_id, "spatial_relationship", slot)
    elif dimension == 9:
        item = mmbench_item(rng, d, scene_id, "OCR", slot)
    elif dimension == 5:
        shape, top = rng.choice(d.shapes), min(3, d.num_colours, d.max_objects)
        n = rng.randint(0, top)
        scene = _count_scene(rng, d, scene_id, {shape: n})
        options, slot = _options(rng, str(n), [str(k) for k in range(top + 1)], slot)
        return _mc(f"How many {plural(shape)} are in the image?", options, slot, "counting", scene, dimension=dimension)
    elif dimension == 8:
        colour = rng.choice(d.colours)
        shapes = rng.sample(list(d.shapes), 2)
        others = rng.sample(
            [c for c in d.colours if c != colour], min(len(d.colours) - 1, max(0, d.max_objects - 2), 2)
        )
        forced = [ObjectSpec(s, colour) for s in shapes] + [ObjectSpec(rng.choice(d.shapes), c) for c in others]
        scene = sample_scene(rng, d, scene_id, forced=forced, num_objects=len(forced), label=False)
        options, slot = _options(rng, colour, d.colours, slot)
        return _mc(
            "Which colour appears most often in the image?", options, slot, "reasoning", scene, dimension=dimension
        )
    else:
        raise ShapeWorldError(f"SEED dimension {dimension} is not generated; ShapeWorld writes {list(SEED_USED)}")
    for key in ("question_cn", "options_cn"):
        item.pop(key, None)
    item["dimension"] = dimension
    return item


def _unique_colour(rng, d, scene_id, shape, colour) -> dict:
    """A scene holding `colour shape` as the only object of that colour."""
    others = [(s, c) for s in d.shapes for c in d.colours if c != colour]
    total = rng.randint(d.min_objects, d.max_objects)
    forced = [ObjectSpec(shape, colour)] + [
        ObjectSpec(s, c) for s, c in rng.sample(others, min(total - 1, len(others)))
    ]
    return sample_scene(rng, d, scene_id, forced=forced, num_objects=len(forced), label=False)


def seed_dimension_has_four_options(dimension: int, d: Difficulty) -> bool:
    """Whether the world of `d` offers four distinct choices for a question of `dimension`."""
    if dimension == 2:
        return d.num_shapes >= 4
    if dimension in (3, 8):
        return d.num_colours >= 4 and (dimension == 3 or d.max_objects >= 2)
    if dimension == 5:
        return min(3, d.num_colours, d.max_objects) >= 3
    return True


__all__ = [
    "MMBENCH_CATEGORIES",
    "MME_SUBTASKS",
    "POPE_SPLITS",
    "SEED_DIMENSIONS",
    "SEED_USED",
    "mmbench_item",
    "mme_item",
    "pope_items",
    "seed_dimension_has_four_options",
    "seed_item",
]
