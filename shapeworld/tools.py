"""Stage-3 tool-use dialogues: ShapeWorld requests answered with task plans (the schema of `shapeworld.plan_schema`,
validated by `tool_use.schema`).

Each row is LLaVA-format and text-only: a system turn with `tool_system_prompt()`, the user's request, and the
plan as `plan_to_text(plan)`::

    {"id": "tools-train-000003", "conversations": [
        {"from": "system", "value": "You are an assistant that plans tool calls. ..."},
        {"from": "human", "value": "Draw a red circle to the left of a blue square, then describe it and read the
                                     description aloud."},
        {"from": "gpt", "value": "[{\"task\": \"text-to-image\", \"id\": 0, \"dep\": [-1], ...}, ...]"}]}

Plans have 1-4 steps, as chains (draw -> describe -> speak) and branches (one drawing described *and* searched for
objects); user files are named by their file name ("input.png", "speech.wav").
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from .plan_schema import plan_to_text, tool_system_prompt
from .text import article, caption, name, relation_phrase
from .world import COLOURS, Difficulty, item_rng, sample_scene

IMAGE_FILES = ("input.png", "photo.png", "scene.png", "picture.jpg")
AUDIO_FILES = ("speech.wav", "request.wav", "note.wav")
QUESTIONS = (
    "How many shapes are there?",
    "What colour is the circle?",
    "Where is the red square?",
    "Is there a blue triangle?",
    "What word is written in the image?",
)
SENTENCES = ("Hello there.", "The red circle is on the left.", "There are 3 shapes.", "Good morning.")
DETAIL = "Describe the image in detail."


def _step(task: str, step_id: int, args: dict, deps: list[int] | None = None) -> dict:
    return {"task": task, "id": step_id, "dep": sorted(deps) if deps else [-1], "args": args}


def _g(k: int) -> str:
    return f"<GENERATED>-{k}"


def describe_for_drawing(rng: random.Random, d: Difficulty) -> str:
    """A drawable description: "a red circle to the left of a blue square" or a caption of a random scene."""
    if rng.random() < 0.5:
        scene = sample_scene(rng, d, "draw", num_objects=min(2, d.max_objects), label=False)
        if len(scene["objects"]) == 2:
            a, b = scene["objects"]
            relation = rng.choice(("left", "right", "above", "below"))
            return f"{article(a['colour'])} {name(a)} {relation_phrase(relation)} {article(b['colour'])} {name(b)}"
    return caption(sample_scene(rng, d, "draw", label=False))


# each template: rng, difficulty -> (request, plan)
def _draw(rng, d):
    desc = describe_for_drawing(rng, d)
    return f"Draw {desc}.", [_step("text-to-image", 0, {"text": desc})]


def _draw_describe(rng, d):
    desc = describe_for_drawing(rng, d)
    return f"Draw {desc}, then describe the picture.", [
        _step("text-to-image", 0, {"text": desc}),
        _step("image-to-text", 1, {"image": _g(0)}, [0]),
    ]


def _draw_describe_speak(rng, d):
    desc = describe_for_drawing(rng, d)
    return f"Draw {desc}, then describe it and read the description aloud.", [
        _step("text-to-image", 0, {"text": desc}),
        _step("image-to-text", 1, {"image": _g(0)}, [0]),
        _step("text-to-speech", 2, {"text": _g(1)}, [1]),
    ]


def _describe_file_speak(rng, d):
    image = rng.choice(IMAGE_FILES)
    return f"Describe {image} and read the description aloud.", [
        _step("image-to-text", 0, {"image": image}),
        _step("text-to-speech", 1, {"text": _g(0)}, [0]),
    ]


def _vqa_speak(rng, d):
    image, question = rng.choice(IMAGE_FILES), rng.choice(QUESTIONS)
    return f'Answer the question "{question}" about {image} and read the answer aloud.', [
        _step("visual-question-answering", 0, {"image": image, "text": question}),
        _step("text-to-speech", 1, {"text": _g(0)}, [0]),
    ]


def _transcribe_draw(rng, d):
    audio = rng.choice(AUDIO_FILES)
    return f"Transcribe {audio} and draw what it says.", [
        _step("automatic-speech-recognition", 0, {"audio": audio}),
        _step("text-to-image", 1, {"text": _g(0)}, [0]),
    ]


def _transcribe_draw_describe_speak(rng, d):
    audio = rng.choice(AUDIO_FILES)
    return f"Transcribe {audio}, draw what it says, describe the drawing and read the description aloud.", [
        _step("automatic-speech-recognition", 0, {"audio": audio}),
        _step("text-to-image", 1, {"text": _g(0)}, [0]),
        _step("image-to-text", 2, {"image": _g(1)}, [1]),
        _step("text-to-speech", 3, {"text": _g(2)}, [2]),
    ]


def _draw_describe_detect(rng, d):
    desc = describe_for_drawing(rng, d)
    return f"Draw {desc}, then describe it and list the objects in it.", [
        _step("text-to-image", 0, {"text": desc}),
        _step("image-to-text", 1, {"image": _g(0)}, [0]),
        _step("object-detection", 2, {"image": _g(0)}, [0]),
    ]


def _draw_detect_describe_speak(rng, d):
    desc = describe_for_drawing(rng, d)
    return f"Draw {desc}, then list the objects in it, describe it and read the description aloud.", [
        _step("text-to-image", 0, {"text": desc}),
        _step("object-detection", 1, {"image": _g(0)}, [0]),
        _step("image-to-text", 2, {"image": _g(0)}, [0]),
        _step("text-to-speech", 3, {"text": _g(2)}, [2]),
    ]


def _draw_ask_speak(rng, d):
    desc, question = describe_for_drawing(rng, d), rng.choice(QUESTIONS)
    return f'Draw {desc}, then answer the question "{question}" about the drawing and read the answer aloud.', [
        _step("text-to-image", 0, {"text": desc}),
        _step("visual-question-answering", 1, {"image": _g(0), "text": question}, [0]),
        _step("text-to-speech", 2, {"text": _g(1)}, [1]),
    ]


def _classify_translate(rng, d):
    image = rng.choice(IMAGE_FILES)
    return f"Classify {image} and translate the result.", [
        _step("image-classification", 0, {"image": image}),
        _step("translation", 1, {"text": _g(0)}, [0]),
    ]


def _detail_summarize(rng, d):
    image = rng.choice(IMAGE_FILES)
    return f"Describe {image} in detail, then summarize the description.", [
        _step("image-text-to-text", 0, {"image": image, "text": DETAIL}),
        _step("summarization", 1, {"text": _g(0)}, [0]),
    ]


def _speak(rng, d):
    sentence = rng.choice(SENTENCES)
    return f'Read "{sentence}" aloud.', [_step("text-to-speech", 0, {"text": sentence})]


def _transcribe_ask(rng, d):
    audio, image = rng.choice(AUDIO_FILES), rng.choice(IMAGE_FILES)
    return f"Transcribe the question in {audio} and answer it about {image}.", [
        _step("automatic-speech-recognition", 0, {"audio": audio}),
        _step("visual-question-answering", 1, {"image": image, "text": _g(0)}, [0]),
    ]


def _detect_file(rng, d):
    image = rng.choice(IMAGE_FILES)
    return f"List the objects in {image}.", [_step("object-detection", 0, {"image": image})]


TEMPLATES: dict[str, Callable[[random.Random, Difficulty], tuple[str, list[dict]]]] = {
    "draw": _draw,
    "draw_describe": _draw_describe,
    "draw_describe_speak": _draw_describe_speak,
    "describe_file_speak": _describe_file_speak,
    "vqa_speak": _vqa_speak,
    "transcribe_draw": _transcribe_draw,
    "transcribe_draw_describe_speak": _transcribe_draw_describe_speak,
    "draw_describe_detect": _draw_describe_detect,
    "draw_detect_describe_speak": _draw_detect_describe_speak,
    "draw_ask_speak": _draw_ask_speak,
    "classify_translate": _classify_translate,
    "detail_summarize": _detail_summarize,
    "speak": _speak,
    "transcribe_ask": _transcribe_ask,
    "detect_file": _detect_file,
}


def tool_dialogue(
    index: int, seed: int, difficulty: Difficulty, split: str = "train", system_prompt: bool = True
) -> dict:
    """One LLaVA-format tool dialogue (see module docstring); also carries `"template"` and the `"plan"` itself."""
    rng = item_rng(seed, f"tools-{split}", index)
    template = list(TEMPLATES)[rng.randrange(len(TEMPLATES))]
    request, plan = TEMPLATES[template](rng, difficulty)
    turns = [{"from": "human", "value": request}, {"from": "gpt", "value": plan_to_text(plan)}]
    if system_prompt:
        turns.insert(0, {"from": "system", "value": tool_system_prompt()})
    return {"id": f"tools-{split}-{index:06d}", "conversations": turns, "template": template, "plan": plan}


def tool_corpus(n: int, seed: int, difficulty: Difficulty) -> Iterator[str]:
    """Every tool text: the system prompt, one request and plan per template, and `n` random dialogues."""
    yield tool_system_prompt()
    yield " ".join(IMAGE_FILES + AUDIO_FILES) + " " + " ".join(COLOURS)
    for k, template in enumerate(TEMPLATES.values()):
        request, plan = template(item_rng(seed, "tool-corpus", k), difficulty)
        yield request
        yield plan_to_text(plan)
    for i in range(n):
        row = tool_dialogue(i, seed, difficulty, split="corpus", system_prompt=False)
        yield from (turn["value"] for turn in row["conversations"])


__all__ = ["AUDIO_FILES", "IMAGE_FILES", "TEMPLATES", "describe_for_drawing", "tool_corpus", "tool_dialogue"]
