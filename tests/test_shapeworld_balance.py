"""ShapeWorld benchmark splits: balanced answers, exact answers, and no answer readable from the text alone."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest

from shapeworld.benchmarks import benchmark_items
from shapeworld.text import LLAVA_SHORT_SUFFIX, QUESTION_TYPES, instruction_turns, plural, position
from shapeworld.world import POSITIONS, get_difficulty, item_rng, sample_scene

D = get_difficulty("default")
N = 480


def yes_no_questions(benchmark: str, seed: int, split: str | None = None, d=D) -> list[tuple[str, str, str]]:
    """(question, template, answer) over all items."""
    out = []
    for item in benchmark_items(benchmark, N, seed, d):
        questions = item["questions"] if benchmark == "mme" else item["splits"][split]
        out += [(q["question"], q["template"], q["answer"]) for q in questions]
    return out


def choice_questions(benchmark: str, seed: int, d=D) -> list[dict]:
    return list(benchmark_items(benchmark, N, seed, d))


def _template(question: str) -> str:
    """The question with every content word of the closed vocabulary masked (a coarser prior's key)."""
    return re.sub(
        r"\b(red|green|blue|yellow|purple|orange|circle|square|triangle|cross|diamond|star|\w+s|\d+)\b", "_", question
    )


def yes_no_prior_accuracy(train, test) -> float:
    """Majority answer per exact question, else per masked template, else overall; learned on `train`."""
    by_question, by_template, overall = defaultdict(Counter), defaultdict(Counter), Counter()
    for question, _, answer in train:
        by_question[question][answer] += 1
        by_template[_template(question)][answer] += 1
        overall[answer] += 1
    right = 0
    for question, _, answer in test:
        table = by_question.get(question) or by_template.get(_template(question)) or overall
        right += table.most_common(1)[0][0] == answer
    return right / len(test)


def choice_prior_accuracy(train, test) -> tuple[float, float]:
    """(letter prior per template, option-text prior per exact question) accuracies, learned on `train`."""
    letters, texts = defaultdict(Counter), defaultdict(Counter)
    for item in train:
        letters[item["template"]][item["answer"]] += 1
        texts[item["question"]][item["options"]["ABCD".index(item["answer"])]] += 1
        texts[item["template"]][item["options"]["ABCD".index(item["answer"])]] += 1
    letter_right = text_right = 0
    for item in test:
        letter_right += letters[item["template"]].most_common(1)[0][0] == item["answer"]
        table = texts.get(item["question"]) or texts[item["template"]]
        scores = [table[o] for o in item["options"]]
        text_right += "ABCD"[scores.index(max(scores))] == item["answer"]
    return letter_right / len(test), text_right / len(test)


@pytest.mark.parametrize("difficulty", ["easy", "default", "hard"])
@pytest.mark.parametrize(
    "benchmark, split", [("mme", None), ("pope", "random"), ("pope", "popular"), ("pope", "adversarial")]
)
def test_yes_no_balanced_and_prior_at_chance(benchmark, split, difficulty):
    d = get_difficulty(difficulty)
    train, test = yes_no_questions(benchmark, 1, split, d), yes_no_questions(benchmark, 2, split, d)
    answers = Counter(a for _, _, a in test)
    assert answers["yes"] == answers["no"], answers
    for template in {t for _, t, _ in test}:
        counts = Counter(a for _, t, a in test if t == template)
        assert counts["yes"] == counts["no"], (template, counts)
    accuracy = yes_no_prior_accuracy(train, test)
    assert abs(accuracy - 0.5) < 0.06, f"{benchmark}/{split}/{difficulty}: text-only prior reaches {accuracy:.3f}"


@pytest.mark.parametrize("difficulty", ["easy", "default", "hard"])
@pytest.mark.parametrize("benchmark", ["mmbench", "seed"])
def test_letters_uniform_and_prior_at_chance(benchmark, difficulty):
    d = get_difficulty(difficulty)
    train, test = choice_questions(benchmark, 1, d), choice_questions(benchmark, 2, d)
    letters = Counter(item["answer"] for item in test)
    assert all(abs(letters[c] / len(test) - 0.25) < 0.03 for c in "ABCD"), letters
    assert all(len(item["options"]) == 4 and len(set(item["options"])) == 4 for item in test)
    letter_accuracy, text_accuracy = choice_prior_accuracy(train, test)
    assert letter_accuracy < 0.31, f"{benchmark}/{difficulty}: letter prior reaches {letter_accuracy:.3f}"
    assert text_accuracy < 0.31, f"{benchmark}/{difficulty}: option-text prior reaches {text_accuracy:.3f}"


def test_prior_check_can_fail():
    """The prior check detects a leak: a split whose count questions always answer "yes" for small numbers."""
    leaky = [
        (f"Is the number of circles in this image {n}?", "count", "yes" if n < 2 else "no") for n in [0, 1, 2, 3] * 50
    ]
    assert yes_no_prior_accuracy(leaky, leaky) == 1.0


def test_stage2_yes_no_balanced():
    answers = Counter()
    for i in range(1500):
        rng = item_rng(4, "bal", i)
        scene = sample_scene(rng, D, "s")
        answers.update(a for _, a in instruction_turns(rng, scene, D) if a in ("Yes", "No"))
    share = answers["Yes"] / (answers["Yes"] + answers["No"])
    assert abs(share - 0.5) < 0.05, answers


def _objects(scene, shape=None, colour=None):
    return [
        o
        for o in scene["objects"]
        if (shape is None or o["shape"] == shape) and (colour is None or o["colour"] == colour)
    ]


def test_mme_answers_are_exact():
    """Independent checks of every MME subtask's answers against the scene ground truth."""
    sides = {"left": ("col", 0), "right": ("col", 2), "top": ("row", 0), "bottom": ("row", 2)}
    relations = {
        "to the left of": ("col", -1),
        "to the right of": ("col", 1),
        "above": ("row", -1),
        "below": ("row", 1),
    }
    checked = Counter()
    for item in benchmark_items("mme", 240, 3, D):
        scene = item["scene"]
        for q in item["questions"]:
            text = q["question"].removesuffix(" Please answer yes or no.")
            if m := re.fullmatch(r"Is there an? (\w+) (\w+) in this image\?", text):
                truth = bool(_objects(scene, m[2], m[1]))
            elif m := re.fullmatch(r"Is the number of (\w+) in this image (\d+)\?", text):
                truth = sum(plural(o["shape"]) == m[1] for o in scene["objects"]) == int(m[2])
            elif m := re.fullmatch(
                r"Is the number of (\w+) plus the number of (\w+) in this image equal to (\d+)\?", text
            ):
                count = sum(plural(o["shape"]) in (m[1], m[2]) for o in scene["objects"])
                truth = count == int(m[3])
            elif m := re.fullmatch(r"Is the (\w+) (\w+) on the (\w+) side of this image\?", text):
                (obj,) = _objects(scene, m[2], m[1])
                axis, value = sides[m[3]]
                truth = obj[axis] == value
            elif m := re.fullmatch(
                r"Is the (\w+) (\w+) (to the left of|to the right of|above|below) the (\w+) (\w+) "
                r"in this image\?",
                text,
            ):
                (a,), (b,) = _objects(scene, m[2], m[1]), _objects(scene, m[5], m[4])
                axis, sign = relations[m[3]]
                truth = (a[axis] - b[axis]) * sign > 0
            elif m := re.fullmatch(r"Is the (\w+) in this image (\w+)\?", text):
                (obj,) = _objects(scene, m[1])
                truth = obj["colour"] == m[2]
            elif m := re.fullmatch(r'Is the word "(\w+)" written in this image\?', text):
                truth = scene["label"]["text"] == m[1]
            else:
                raise AssertionError(f"unchecked MME question {text!r}")
            assert ("yes" if truth else "no") == q["answer"], (q, scene)
            checked[item["subtask"]] += 1
    assert len(checked) == 6 and min(checked.values()) >= 60


def test_multiple_choice_answers_are_exact():
    for benchmark in ("mmbench", "seed"):
        for item in benchmark_items(benchmark, 200, 6, D):
            scene, correct = item["scene"], item["options"]["ABCD".index(item["answer"])]
            text = item["question"]
            if m := re.fullmatch(r"Where is the (\w+) (\w+) in the image\?", text):
                (obj,) = _objects(scene, m[2], m[1])
                assert correct == position(obj)
                assert sum(o == position(obj) for o in item["options"]) == 1
            elif m := re.fullmatch(r"What colour is the (\w+)\?", text):
                (obj,) = _objects(scene, m[1])
                assert correct == obj["colour"]
            elif m := re.fullmatch(r"How many (\w+) are in the image\?", text):
                assert correct == str(sum(plural(o["shape"]) == m[1] for o in scene["objects"]))
            elif m := re.fullmatch(r"Which shape is directly (above|below) the (\w+) (\w+)\?", text):
                (b,) = _objects(scene, m[3], m[2])
                step = -1 if m[1] == "above" else 1
                (a,) = [o for o in scene["objects"] if o["col"] == b["col"] and o["row"] == b["row"] + step]
                assert correct == f"{a['colour']} {a['shape']}"
            elif text == "What word is written in the image?":
                assert correct == scene["label"]["text"]


def test_suffix_is_llava_s():
    assert LLAVA_SHORT_SUFFIX == "\nAnswer the question using a single word or phrase."


@pytest.mark.parametrize(
    "knobs",
    [
        dict(min_objects=1, max_objects=1, num_colours=2, num_shapes=2, label_prob=0.0),
        dict(min_objects=6, max_objects=6, num_colours=6, num_shapes=6, label_prob=1.0),
        dict(min_objects=1, max_objects=6, num_colours=3, num_shapes=4, label_prob=0.5),
        dict(min_objects=2, max_objects=3, num_colours=2, num_shapes=6, distractors=10),
    ],
)
def test_extreme_knobs_still_generate_every_part(knobs):
    from shapeworld.tools import tool_dialogue

    d = get_difficulty(knobs)
    for benchmark in ("mme", "pope", "mmbench", "seed"):
        items = list(benchmark_items(benchmark, 60, 0, d))
        assert len(items) == 60
    for i in range(60):
        rng = item_rng(0, "x", i)
        assert instruction_turns(rng, sample_scene(rng, d, "x"), d)
        tool_dialogue(i, 0, d)


def test_palette_too_small_for_absent_objects_is_refused():
    from shapeworld import ShapeWorldError

    with pytest.raises(ShapeWorldError, match="num_colours \\* num_shapes must be >= 2 \\* max_objects"):
        get_difficulty({"max_objects": 6, "num_colours": 2, "num_shapes": 3})


def test_stage2_multiple_choice_answers_are_exact_and_letters_balanced():
    """Every stage-2 multiple-choice kind (position, colour, shape, count, relation) names the right option."""
    from shapeworld.text import LETTERS, relation_holds

    kinds, letters = Counter(), Counter()
    d = get_difficulty("easy")
    for i in range(600):
        rng = item_rng(8, "mc", i)
        scene = sample_scene(rng, d, "s")
        question, letter, style = QUESTION_TYPES["choice"](rng, scene, d)
        lines = question.split("\n")
        options = {line[0]: line[3:] for line in lines[1:-1]}
        correct, text = options[letter], lines[0]
        letters[letter] += 1
        assert list(options) == list(LETTERS[: len(options)]) and len(set(options.values())) == len(options)
        if m := re.fullmatch(r"Where is the (\w+) (\w+)\?", text):
            (obj,) = _objects(scene, m[2], m[1])
            assert correct == position(obj)
            kinds["position"] += 1
        elif m := re.fullmatch(r"What colour is the (\w+) (.+)\?", text):
            (obj,) = [o for o in _objects(scene, m[1]) if POSITIONS[(o["row"], o["col"])][1] == m[2]]
            assert correct == obj["colour"]
            kinds["colour"] += 1
        elif m := re.fullmatch(r"What shape is the (\w+) object\?", text):
            (obj,) = _objects(scene, colour=m[1])
            assert correct == obj["shape"]
            kinds["shape"] += 1
        elif m := re.fullmatch(r"How many (\w+) are in the image\?", text):
            assert correct == str(sum(plural(o["shape"]) == m[1] for o in scene["objects"]))
            kinds["count"] += 1
        elif m := re.fullmatch(r"Where is the (\w+) (\w+) relative to the (\w+) (\w+)\?", text):
            (a,), (b,) = _objects(scene, m[2], m[1]), _objects(scene, m[4], m[3])
            assert [r for r in options.values() if relation_holds(a, b, r)] == [correct]
            kinds["relation"] += 1
        else:
            raise AssertionError(f"unexpected multiple-choice question {text!r}")
    assert len(kinds) == 5, kinds
    # uniform over the slots; D is rarer only because easy's three shapes give three options
    assert len(letters) == 4 and min(letters.values()) > 0.15 * 600 and max(letters.values()) < 0.35 * 600, letters
