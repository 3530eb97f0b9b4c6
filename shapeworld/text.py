"""Exact text from a scene's ground truth: names, captions (stage 1), instruction conversations (stage 2), Chinese
templates, and `vocabulary_sentences` (the closed vocabulary; the whole tokenizer corpus is `shapeworld.corpus`)."""

from __future__ import annotations

import random
from collections import Counter

from .world import (
    COLOURS,
    LABEL_WORDS,
    POSITIONS,
    QUESTION_TYPE_NAMES,
    SHAPES,
    Difficulty,
)

LLAVA_SHORT_SUFFIX = "\nAnswer the question using a single word or phrase."
LLAVA_LETTER_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
LLAVA_LETTER_SUFFIX_CN = "\n请直接回答选项字母。"
MME_SUFFIX = " Please answer yes or no."
BRIEF_PROMPTS = (
    "Describe the image concisely.",
    "Give a short description of the image.",
    "What is in the image?",
    "Write a short caption for the image.",
)
DETAIL_PROMPT = "Describe the image in detail."
LETTERS = "ABCD"

COLOURS_CN = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色", "orange": "橙色"}
SHAPES_CN = {
    "circle": "圆形",
    "square": "正方形",
    "triangle": "三角形",
    "cross": "十字形",
    "diamond": "菱形",
    "star": "星形",
}
POSITIONS_CN = {
    "top left": "左上角",
    "top": "上方",
    "top right": "右上角",
    "left": "左侧",
    "center": "中间",
    "right": "右侧",
    "bottom left": "左下角",
    "bottom": "下方",
    "bottom right": "右下角",
}
RELATIONS = ("left", "right", "above", "below")
RELATIONS_CN = {"left": "左边", "right": "右边", "above": "上方", "below": "下方"}


def article(word: str) -> str:
    """ "a" or "an" for the word that follows."""
    return "an" if word[:1] in "aeiou" else "a"


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def name(obj: dict) -> str:
    """ "red circle"."""
    return f"{obj['colour']} {obj['shape']}"


def name_cn(obj: dict) -> str:
    return COLOURS_CN[obj["colour"]] + SHAPES_CN[obj["shape"]]


def position(obj: dict) -> str:
    """The answer phrase of the object's cell: "top left", "center", ..."""
    return POSITIONS[(obj["row"], obj["col"])][0]


def _reading_order(scene: dict) -> list[dict]:
    return sorted(scene["objects"], key=lambda o: (o["row"], o["col"]))


def _phrase(obj: dict) -> str:
    size = "" if obj["size"] == "medium" else obj["size"] + " "
    words = f"{size}{name(obj)}"
    return f"{article(words)} {words} {POSITIONS[(obj['row'], obj['col'])][1]}"


def caption(scene: dict) -> str:
    """Short exact caption naming every object and its position, e.g.
    "a red circle at the top left and a large blue square in the center"."""
    parts = [_phrase(o) for o in _reading_order(scene)]
    label = scene.get("label")
    if label:
        parts.append(f"the word {label['text']} {POSITIONS[(label['row'], label['col'])][1]}")
    return " and ".join(parts)


def detailed_description(scene: dict) -> str:
    objects = _reading_order(scene)
    count = len(objects)
    first = f"There {'is 1 shape' if count == 1 else f'are {count} shapes'} on a grey background."
    sentences = [first] + [_phrase(o)[0].upper() + _phrase(o)[1:] + "." for o in objects]
    label = scene.get("label")
    if label:
        sentences.append(f"The word {label['text']} is written {POSITIONS[(label['row'], label['col'])][1]}.")
    return " ".join(sentences)


def options_block(options: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))


# ---------------------------------------------------------------- stage 2 question types
# each returns (question, answer, kind) or None when the scene does not allow it; kinds: "short", "yesno", "long"


def _q_count_all(rng, scene, d):
    return "How many shapes are there?", str(len(scene["objects"])), "short"


def _q_count_shape(rng, scene, d):
    shape = rng.choice(d.shapes)
    return f"How many {plural(shape)} are there?", str(sum(o["shape"] == shape for o in scene["objects"])), "short"


def _q_count_colour(rng, scene, d):
    colour = rng.choice(d.colours)
    n = sum(o["colour"] == colour for o in scene["objects"])
    return f"How many {colour} shapes are there?", str(n), "short"


def _q_attribute(rng, scene, known: str, asked: str, question: str):
    """Ask the `asked` attribute of an object named by its `known` one (`question` formatted with it), among the
    objects whose `known` value no other object has; None when there is none."""
    counts = Counter(o[known] for o in scene["objects"])
    candidates = [o for o in scene["objects"] if counts[o[known]] == 1]
    if not candidates:
        return None
    obj = rng.choice(candidates)
    return question.format(obj[known]), obj[asked], "short"


def _q_colour(rng, scene, d):
    return _q_attribute(rng, scene, "shape", "colour", "What colour is the {}?")


def _q_shape(rng, scene, d):
    return _q_attribute(rng, scene, "colour", "shape", "What shape is the {} object?")


def _q_position(rng, scene, d):
    obj = rng.choice(scene["objects"])
    return f"Where is the {name(obj)}?", position(obj), "short"


def existence_question(rng, scene, d, negatives: str = "random") -> tuple[str, str]:
    """ "Is there a <colour> <shape> in the image?" with "Yes" half the time. The absent object of a "No":
    `negatives="random"` any; `"near"` one that shares its shape or colour with a present one when the scene allows
    (POPE's popular/adversarial negatives); `"cross"` one whose colour and shape are both present on other objects
    when the scene allows (only checking both on one object answers it), else near."""
    if negatives not in ("random", "near", "cross"):
        raise ValueError(f"negatives={negatives!r}: expected 'random', 'near' or 'cross'")
    present = {(o["shape"], o["colour"]) for o in scene["objects"]}
    if rng.random() < 0.5:
        shape, colour = rng.choice(sorted(present))
        answer = "Yes"
    else:
        absent = [(s, c) for s in d.shapes for c in d.colours if (s, c) not in present]
        shapes, colours = {s for s, _ in present}, {c for _, c in present}
        near = [(s, c) for s, c in absent if s in shapes or c in colours]
        cross = [(s, c) for s, c in near if s in shapes and c in colours]
        pools = {"random": [absent], "near": [near, absent], "cross": [cross, near, absent]}[negatives]
        shape, colour = rng.choice(next(pool for pool in pools if pool))
        answer = "No"
    return f"Is there {article(colour)} {colour} {shape} in the image?", answer


def _q_exists(rng, scene, d):
    return (*existence_question(rng, scene, d), "yesno")


def relation_holds(a: dict, b: dict, relation: str) -> bool:
    return {
        "left": a["col"] < b["col"],
        "right": a["col"] > b["col"],
        "above": a["row"] < b["row"],
        "below": a["row"] > b["row"],
    }[relation]


def relation_phrase(relation: str) -> str:
    return {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}[relation]


def _q_relation(rng, scene, d):
    pairs = [(a, b) for a in scene["objects"] for b in scene["objects"] if a is not b]
    relation = rng.choice(RELATIONS)
    axis = "col" if relation in ("left", "right") else "row"
    pairs = [(a, b) for a, b in pairs if a[axis] != b[axis]]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    answer = "Yes" if relation_holds(a, b, relation) else "No"
    return f"Is the {name(a)} {relation_phrase(relation)} the {name(b)}?", answer, "yesno"


def _q_side(rng, scene, d):
    pairs = [(a, b) for a in scene["objects"] for b in scene["objects"] if a is not b and a["col"] != b["col"]]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    left = a if a["col"] < b["col"] else b
    return f"Which is further left, the {name(a)} or the {name(b)}?", f"the {name(left)}", "short"


def _q_ocr(rng, scene, d):
    if not scene.get("label"):
        return None
    return "What word is written in the image?", scene["label"]["text"], "short"


def _q_more(rng, scene, d):
    c1, c2 = rng.sample(list(d.colours), 2)
    n1 = sum(o["colour"] == c1 for o in scene["objects"])
    n2 = sum(o["colour"] == c2 for o in scene["objects"])
    if n1 == n2:
        return None
    return f"Are there more {c1} shapes than {c2} shapes?", "Yes" if n1 > n2 else "No", "yesno"


def _q_removed(rng, scene, d):
    obj = rng.choice(scene["objects"])
    return f"If the {name(obj)} were removed, how many shapes would be left?", str(len(scene["objects"]) - 1), "short"


def _q_detail(rng, scene, d):
    return DETAIL_PROMPT, detailed_description(scene), "long"


def _choice_position(rng, scene, d):
    question, answer, _ = _q_position(rng, scene, d)
    return question, answer, [p for p, _ in POSITIONS.values()]


def _choice_colour(rng, scene, d):
    obj = rng.choice(scene["objects"])
    where = POSITIONS[(obj["row"], obj["col"])][1]
    return f"What colour is the {obj['shape']} {where}?", obj["colour"], list(d.colours)


def _choice_shape(rng, scene, d):
    made = _q_shape(rng, scene, d)
    return None if made is None else (made[0], made[1], list(d.shapes))


def _choice_count(rng, scene, d):
    shape = rng.choice(d.shapes)
    count = sum(o["shape"] == shape for o in scene["objects"])
    return f"How many {plural(shape)} are in the image?", str(count), [str(k) for k in range(d.max_objects + 1)]


def _choice_relation(rng, scene, d):
    """Two objects that differ along one axis only, so exactly one of left/right/above/below holds."""
    pairs = [
        (a, b)
        for a in scene["objects"]
        for b in scene["objects"]
        if a is not b and (a["row"] == b["row"]) != (a["col"] == b["col"])
    ]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    correct = next(r for r in RELATIONS if relation_holds(a, b, r))
    return f"Where is the {name(a)} relative to the {name(b)}?", correct, list(RELATIONS)


CHOICE_KINDS = (_choice_position, _choice_colour, _choice_shape, _choice_count, _choice_relation)


def _q_choice(rng, scene, d):
    """A multiple-choice question (A-OKVQA style in LLaVA-665K): position, colour, shape, count or spatial relation,
    the correct option at a random letter among up to four."""
    made = rng.choice(CHOICE_KINDS)(rng, scene, d)
    if made is None:
        made = _choice_position(rng, scene, d)
    question, correct, pool = made
    others = rng.sample([p for p in pool if p != correct], min(3, len(pool) - 1))
    options = others[:]
    slot = rng.randrange(len(options) + 1)
    options.insert(slot, correct)
    return f"{question}\n{options_block(options)}{LLAVA_LETTER_SUFFIX}", LETTERS[slot], "letter"


QUESTION_TYPES = {
    "count": _q_count_all,
    "count_shape": _q_count_shape,
    "count_colour": _q_count_colour,
    "colour": _q_colour,
    "shape": _q_shape,
    "position": _q_position,
    "existence": _q_exists,
    "relation": _q_relation,
    "side": _q_side,
    "ocr": _q_ocr,
    "more": _q_more,
    "removed": _q_removed,
    "detail": _q_detail,
    "choice": _q_choice,
}


assert tuple(QUESTION_TYPES) == QUESTION_TYPE_NAMES, "keep shapeworld.world.QUESTION_TYPE_NAMES in sync"


def instruction_turns(
    rng: random.Random, scene: dict, difficulty: Difficulty, max_turns: int | None = None
) -> list[tuple[str, str]]:
    """1–`max_turns` (default `difficulty.max_turns`) distinct (question, answer) pairs about `scene`. A share
    `difficulty.short_suffix_rate` of short-answer questions end with LLaVA's short-answer suffix (the benchmark style;
    the others are plain). A question type listed k times in `difficulty.question_types` is asked k times as often."""
    kinds = list(difficulty.question_types or QUESTION_TYPES)
    rng.shuffle(kinds)
    wanted = rng.randint(1, difficulty.max_turns if max_turns is None else max_turns)
    turns, asked = [], set()
    for kind in kinds:
        made = QUESTION_TYPES[kind](rng, scene, difficulty)
        if made is None or made[0] in asked:
            continue
        question, answer, style = made
        asked.add(question)
        # one draw per short question whatever the rate: data differing only in the rate differ only in suffixes
        if style in ("short", "yesno") and rng.random() < difficulty.short_suffix_rate:
            question += LLAVA_SHORT_SUFFIX
        turns.append((question, answer))
        if len(turns) == wanted:
            break
    if not turns:  # the allowed types do not apply to this scene (e.g. only "ocr" and no word): count instead
        question, answer, _ = _q_count_all(rng, scene, difficulty)
        turns.append((question, answer))
    return turns


def conversation(turns: list[tuple[str, str]], with_image: bool = True) -> list[dict]:
    """LLaVA `conversations` list; `<image>\\n` is put at the front of the first human turn."""
    out = []
    for i, (question, answer) in enumerate(turns):
        value = ("<image>\n" + question) if (i == 0 and with_image) else question
        out.append({"from": "human", "value": value})
        out.append({"from": "gpt", "value": answer})
    return out


def caption_row(row_id: str, image: str, rng: random.Random, scene: dict) -> dict:
    """One stage-1 row in the LLaVA-558K format."""
    return {"id": row_id, "image": image, "conversations": conversation([(rng.choice(BRIEF_PROMPTS), caption(scene))])}


def instruction_row(row_id: str, image: str, rng: random.Random, scene: dict, difficulty: Difficulty) -> dict:
    """One stage-2 row in the LLaVA-665K format (multi-turn, `<image>` in the first human turn)."""
    return {"id": row_id, "image": image, "conversations": conversation(instruction_turns(rng, scene, difficulty))}


# ---------------------------------------------------------------- tokenizer corpus


def vocabulary_sentences() -> list[str]:
    """Sentences that contain every closed-vocabulary word (colours, shapes, positions, words, numbers, Chinese)."""
    lines = [
        " ".join(COLOURS) + " " + " ".join(SHAPES) + " " + " ".join(plural(s) for s in SHAPES),
        " ".join(p for p, _ in POSITIONS.values()) + " " + " ".join(c for _, c in POSITIONS.values()),
        " ".join(LABEL_WORDS) + " " + " ".join(f'"{w}"' for w in LABEL_WORDS),
        "0 1 2 3 4 5 6 7 8 9 10 small large medium Yes No yes no a an A B C D A. B. C. D.",
        "to the left of to the right of above below left right",
        " ".join(COLOURS_CN.values()) + " " + " ".join(SHAPES_CN.values()),
        " ".join(POSITIONS_CN.values()) + " " + " ".join(RELATIONS_CN.values()),
        MME_SUFFIX.strip(),
        LLAVA_SHORT_SUFFIX.strip(),
        LLAVA_LETTER_SUFFIX.strip(),
        LLAVA_LETTER_SUFFIX_CN.strip(),
        DETAIL_PROMPT,
        *BRIEF_PROMPTS,
    ]
    return lines


__all__ = [
    "BRIEF_PROMPTS",
    "article",
    "COLOURS_CN",
    "DETAIL_PROMPT",
    "LLAVA_LETTER_SUFFIX",
    "LLAVA_LETTER_SUFFIX_CN",
    "LLAVA_SHORT_SUFFIX",
    "MME_SUFFIX",
    "POSITIONS_CN",
    "QUESTION_TYPES",
    "RELATIONS",
    "RELATIONS_CN",
    "SHAPES_CN",
    "caption",
    "caption_row",
    "conversation",
    "detailed_description",
    "instruction_row",
    "instruction_turns",
    "name",
    "name_cn",
    "options_block",
    "plural",
    "position",
    "relation_holds",
    "relation_phrase",
    "vocabulary_sentences",
]
