"""Benchmark splits in the official file layouts: MME, POPE, MMBench (EN + CN), SEED-Bench (image dimensions).

Items are built "question first": the asked value (count, colour, side, word, ...) is drawn uniformly, then a scene is
made that satisfies it, and the wrong value of a yes/no pair is drawn uniformly from the other values. So every
question string is as likely to be answered "yes" as "no", option letters are uniform (a shuffled A-D block per four
questions), and no answer can be read from the text alone.

Layouts written (each loader of the real data reads them unchanged):

- MME: `MME_Benchmark_release_version/<subtask>/<stem>.png` + `<stem>.txt` side by side (the release's layout for
  existence, count, position, color, OCR and numerical_calculation); each `.txt` holds two lines
  `question<TAB>Yes` then `question<TAB>No`, questions ending in " Please answer yes or no.".
- POPE: `coco_pope_{random,popular,adversarial}.json` (one JSON object per line: question_id, image, text, label)
  + `val2014/<image>`; the same images and positives in all three splits; negatives drawn uniformly among the absent
  objects (random), in proportion to their frequency in the split (popular: POPE takes the top-k of the frequency
  ranking, which in a world of equally frequent objects would ask the same few objects as negatives in every image and
  make "no" readable from the question alone), or among the absent objects that share a shape or colour with a present
  one, in proportion to their co-occurrence with the present ones (adversarial; POPE again takes the top-k, with the
  same leak).
- MMBench: `mmbench_dev_en.tsv` and `mmbench_dev_cn.tsv` (same index, image and answer; CN = translated templates),
  columns index, question, hint, A, B, C, D, answer, category, image (base64 PNG), source, l2-category, comment, split.
- SEED-Bench: `SEED-Bench.json` {"questions": [...], "question_type": {name: id}} + `SEED-Bench-image/<data_id>`.
"""

from __future__ import annotations

import base64
import json
import os
import random
from collections import Counter
from collections.abc import Iterator

from .text import (
    COLOURS_CN,
    LLAVA_LETTER_SUFFIX,
    LLAVA_LETTER_SUFFIX_CN,
    LLAVA_SHORT_SUFFIX,
    MME_SUFFIX,
    POSITIONS_CN,
    RELATIONS,
    RELATIONS_CN,
    SHAPES_CN,
    article,
    caption,
    name,
    name_cn,
    options_block,
    plural,
    position,
    relation_phrase,
)
from .world import LABEL_WORDS, POSITIONS, Difficulty, ObjectSpec, ShapeWorldError, item_rng, sample_scene, scene_png

BENCHMARKS = ("mme", "pope", "mmbench", "seed")
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
HINT_EN = "The image shows shapes on a grey background."
HINT_CN = "图像中是灰色背景上的形状。"


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


def _letter_slot(seed: int, part: str, index: int, n_options: int) -> int:
    block = random.Random(f"shapeworld:{seed}:{part}:letters:{index // 4}").sample(range(4), 4)
    return block[index % 4] % n_options


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
        return _mc(
            f"Where is the {name(obj)} in the image?",
            options,
            slot,
            category,
            scene,
            f"{name_cn(obj)}在图像的什么位置？",
            [POSITIONS_CN[o] for o in options],
        )
    if category == "attribute_recognition":
        shape, colour = _pick_pair(rng, d)
        scene = sample_scene(rng, d, scene_id, forced=[ObjectSpec(shape, colour)], avoid_shapes=[shape], label=False)
        options, slot = _options(rng, colour, d.colours, slot)
        return _mc(
            f"What colour is the {shape}?",
            options,
            slot,
            category,
            scene,
            f"{SHAPES_CN[shape]}是什么颜色？",
            [COLOURS_CN[o] for o in options],
        )
    if category == "OCR":
        scene = sample_scene(rng, d, scene_id, num_objects=rng.randint(d.min_objects, d.max_objects), label=True)
        options, slot = _options(rng, scene["label"]["text"], LABEL_WORDS, slot)
        return _mc(
            "What word is written in the image?", options, slot, category, scene, "图像中写的是什么词？", list(options)
        )
    if category == "spatial_relationship":
        relation = rng.choice(RELATIONS)
        scene = sample_scene(rng, d, scene_id, forced=_two_objects(rng, d, _related_cells(rng, relation)), label=False)
        a, b = scene["objects"][:2]
        options, slot = _options(rng, relation, RELATIONS, slot)
        return _mc(
            f"Where is the {name(a)} relative to the {name(b)}?",
            options,
            slot,
            category,
            scene,
            f"{name_cn(a)}在{name_cn(b)}的哪一边？",
            [RELATIONS_CN[o] for o in options],
        )
    if category == "physical_relation":
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
        return _mc(
            f"Which shape is {where} the {name(b)}?",
            options,
            slot,
            category,
            scene,
            f"{name_cn(b)}的{where_cn}是哪个形状？",
            [to_cn[o] for o in options],
        )
    raise ShapeWorldError(f"unknown MMBench category {category!r}; ShapeWorld writes {list(MMBENCH_CATEGORIES)}")


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


# ---------------------------------------------------------------- item streams


def benchmark_items(benchmark: str, n: int, seed: int, difficulty: Difficulty) -> Iterator[dict] | list[dict]:
    """The first `n` items of `benchmark` ("mme" images, "pope" images, "mmbench" or "seed" questions), no pixels."""
    if benchmark not in BENCHMARKS:
        raise ShapeWorldError(f"unknown benchmark {benchmark!r}; choose one of {list(BENCHMARKS)}")
    if n < 0:
        raise ShapeWorldError(f"number of {benchmark} items must be >= 0, got {n}")
    if benchmark == "pope":
        return pope_items(n, seed, difficulty)
    return _stream(benchmark, n, seed, difficulty)


def _stream(benchmark: str, n: int, seed: int, d: Difficulty) -> Iterator[dict]:
    for i in range(n):
        rng = item_rng(seed, benchmark, i)
        scene_id = f"{benchmark}-{i:06d}"
        if benchmark == "mme":
            yield mme_item(rng, d, scene_id, MME_SUBTASKS[i % len(MME_SUBTASKS)])
        elif benchmark == "mmbench":
            category = list(MMBENCH_CATEGORIES)[i % len(MMBENCH_CATEGORIES)]
            item = mmbench_item(rng, d, scene_id, category, _letter_slot(seed, benchmark, i, 4))
            item["category"] = category
            yield item
        else:
            dimension = SEED_USED[i % len(SEED_USED)]
            if not seed_dimension_has_four_options(dimension, d):
                dimension = 4  # SEED questions always have four choices; location has nine candidates
            yield seed_item(rng, d, scene_id, dimension, _letter_slot(seed, benchmark, i, 4))


def seed_dimension_has_four_options(dimension: int, d: Difficulty) -> bool:
    """Whether the world of `d` offers four distinct choices for a question of `dimension`."""
    if dimension == 2:
        return d.num_shapes >= 4
    if dimension in (3, 8):
        return d.num_colours >= 4 and (dimension == 3 or d.max_objects >= 2)
    if dimension == 5:
        return min(3, d.num_colours, d.max_objects) >= 3
    return True


def prompt_texts(benchmark: str, item: dict) -> Iterator[str]:
    """The texts a model sees and answers for one item, as LLaVA-1.5 prompts them (for the tokenizer corpus)."""
    if benchmark in ("mme", "pope"):
        questions = item["questions"] if benchmark == "mme" else [q for qs in item["splits"].values() for q in qs]
        for q in questions:
            yield q["question"]
            yield q["question"].replace(MME_SUFFIX, "") + LLAVA_SHORT_SUFFIX
            yield q["answer"].capitalize()
        return
    yield item["question"] + "\n" + options_block(item["options"]) + LLAVA_LETTER_SUFFIX
    yield from item["options"]
    yield item["answer"]
    if "question_cn" in item:
        yield HINT_CN + "\n" + item["question_cn"] + "\n" + options_block(item["options_cn"]) + LLAVA_LETTER_SUFFIX_CN
        yield HINT_EN


# ---------------------------------------------------------------- writers


def _write_png(path: str, scene: dict, image_size: int) -> bytes:
    data = scene_png(scene, image_size)
    with open(path, "wb") as handle:
        handle.write(data)
    return data


def write_mme(root: str, items, image_size: int) -> int:
    """MME release layout under `root/MME_Benchmark_release_version`; returns the number of questions."""
    base = os.path.join(root, "MME_Benchmark_release_version")
    count = 0
    for index, item in enumerate(items):
        folder = os.path.join(base, item["subtask"])
        os.makedirs(folder, exist_ok=True)
        stem = f"{index:06d}"
        _write_png(os.path.join(folder, stem + ".png"), item["scene"], image_size)
        with open(os.path.join(folder, stem + ".txt"), "w", encoding="utf-8", newline="\n") as handle:
            for q in item["questions"]:
                handle.write(f"{q['question']}\t{q['answer'].capitalize()}\n")
                count += 1
    return count


def write_pope(root: str, items, image_size: int) -> int:
    """`coco_pope_<split>.json` (JSON lines) + `val2014/`; returns the number of questions over all splits."""
    image_dir = os.path.join(root, "val2014")
    os.makedirs(image_dir, exist_ok=True)
    handles = {
        s: open(os.path.join(root, f"coco_pope_{s}.json"), "w", encoding="utf-8", newline="\n") for s in POPE_SPLITS
    }
    ids, count = Counter(), 0
    try:
        for index, item in enumerate(items):
            image = f"COCO_val2014_{index:012d}.png"
            _write_png(os.path.join(image_dir, image), item["scene"], image_size)
            for split in POPE_SPLITS:
                for q in item["splits"][split]:
                    ids[split] += 1
                    row = {"question_id": ids[split], "image": image, "text": q["question"], "label": q["answer"]}
                    handles[split].write(json.dumps(row) + "\n")
                    count += 1
    finally:
        for handle in handles.values():
            handle.close()
    return count


MMBENCH_COLUMNS = (
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
)


def _tsv_field(value: str, where: str) -> str:
    if "\t" in value or "\n" in value or "\r" in value:
        raise ShapeWorldError(f"{where}: a TSV field cannot contain tabs or newlines: {value!r}")
    return value


def write_mmbench(folder: str, items, image_size: int) -> int:
    """`mmbench_dev_en.tsv` + `mmbench_dev_cn.tsv` in `folder`; returns the number of questions per file."""
    os.makedirs(folder, exist_ok=True)
    paths = {lang: os.path.join(folder, f"mmbench_dev_{lang}.tsv") for lang in ("en", "cn")}
    handles = {lang: open(path, "w", encoding="utf-8", newline="") for lang, path in paths.items()}
    count = 0
    try:
        for handle in handles.values():
            handle.write("\t".join(MMBENCH_COLUMNS) + "\n")
        for index, item in enumerate(items):
            image = base64.b64encode(scene_png(item["scene"], image_size)).decode("ascii")
            with_hint = index % 3 == 2
            for lang, handle in handles.items():
                options = item["options"] if lang == "en" else item["options_cn"]
                options = list(options) + [""] * (4 - len(options))
                row = {
                    "index": str(index),
                    "question": item["question"] if lang == "en" else item["question_cn"],
                    "hint": (HINT_EN if lang == "en" else HINT_CN) if with_hint else "",
                    **dict(zip("ABCD", options)),
                    "answer": item["answer"],
                    "category": item["category"],
                    "image": image,
                    "source": "shapeworld",
                    "l2-category": MMBENCH_CATEGORIES[item["category"]],
                    "comment": "",
                    "split": "dev",
                }
                fields = [_tsv_field(row[c], f"{paths[lang]} row {index} column {c}") for c in MMBENCH_COLUMNS]
                handle.write("\t".join(fields) + "\n")
            count += 1
    finally:
        for handle in handles.values():
            handle.close()
    return count


def write_seed(root: str, items, image_size: int) -> int:
    """`SEED-Bench.json` + `SEED-Bench-image/`; returns the number of questions."""
    image_dir = os.path.join(root, "SEED-Bench-image")
    os.makedirs(image_dir, exist_ok=True)
    questions = []
    for index, item in enumerate(items):
        data_id = f"shapeworld_{index:06d}.png"
        _write_png(os.path.join(image_dir, data_id), item["scene"], image_size)
        options = list(item["options"]) + [""] * (4 - len(item["options"]))
        questions.append(
            {
                "answer": item["answer"],
                **{f"choice_{c}": options[k] for k, c in enumerate("abcd")},
                "data_id": data_id,
                "data_type": "image",
                "question": item["question"],
                "question_id": str(index),
                "question_type_id": item["dimension"],
            }
        )
    with open(os.path.join(root, "SEED-Bench.json"), "w", encoding="utf-8", newline="\n") as handle:
        json.dump({"questions": questions, "question_type": SEED_DIMENSIONS}, handle, ensure_ascii=False, indent=1)
    return len(questions)


__all__ = [
    "BENCHMARKS",
    "MMBENCH_CATEGORIES",
    "MMBENCH_COLUMNS",
    "MME_SUBTASKS",
    "POPE_SPLITS",
    "SEED_DIMENSIONS",
    "SEED_USED",
    "benchmark_items",
    "mmbench_item",
    "mme_item",
    "pope_items",
    "prompt_texts",
    "seed_item",
    "write_mmbench",
    "write_mme",
    "write_pope",
    "write_seed",
]
