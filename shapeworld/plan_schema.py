"""The task-plan vocabulary: the tasks a plan may use, its canonical text and the system prompt listing the tools.

Defined here, below both users: ShapeWorld's stage-3 tool dialogues (`shapeworld.tools`) write plans with it, and
`tool_use.schema` (the documented place to import it from, which adds parsing and validation) checks and runs them.
Standard library only.

A plan is a JSON list of steps (HuggingGPT convention)::

    [{"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "input.png"}},
     {"task": "text-to-image", "id": 1, "dep": [0], "args": {"text": "<GENERATED>-0"}}]

>>> plan_to_text([{"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "input.png"}}])
'[{"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "input.png"}}]'
>>> DEFAULT_TASKS["image-to-text"].output
'text'
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MODALITIES = ("text", "image", "audio")


@dataclass(frozen=True)
class TaskSpec:
    """A task (tool type) a plan may use: its argument names with their modalities and its output modality."""

    name: str
    inputs: dict[str, str]
    output: str
    description: str = ""

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.inputs.items() if v not in MODALITIES}
        if bad or self.output not in MODALITIES:
            raise ValueError(
                f"TaskSpec {self.name!r}: modalities must be one of {MODALITIES}, got inputs={self.inputs}, "
                f"output={self.output!r}"
            )


def _spec(name: str, inputs: dict[str, str], output: str, description: str) -> tuple[str, TaskSpec]:
    return name, TaskSpec(name, inputs, output, description)


DEFAULT_TASKS: dict[str, TaskSpec] = dict(
    [
        _spec("text-to-image", {"text": "text"}, "image", "draw an image from a description"),
        _spec("image-to-text", {"image": "image"}, "text", "describe an image"),
        _spec("text-to-speech", {"text": "text"}, "audio", "read text aloud"),
        _spec("automatic-speech-recognition", {"audio": "audio"}, "text", "transcribe speech"),
        _spec(
            "visual-question-answering", {"image": "image", "text": "text"}, "text", "answer a question about an image"
        ),
        _spec("image-classification", {"image": "image"}, "text", "name what an image shows"),
        _spec("object-detection", {"image": "image"}, "text", "list the objects in an image"),
        _spec("translation", {"text": "text"}, "text", "translate text"),
        _spec("summarization", {"text": "text"}, "text", "summarise text"),
        _spec(
            "image-text-to-text",
            {"image": "image", "text": "text"},
            "text",
            "MAGE: follow an instruction about an image",
        ),
    ]
)


def plan_to_text(plan: list[dict]) -> str:
    """The canonical compact JSON the model is trained to emit: ``json.dumps(plan, separators=(", ", ": "))``."""
    return json.dumps(plan, separators=(", ", ": "), ensure_ascii=False)


def tool_system_prompt(tasks: dict[str, TaskSpec] = DEFAULT_TASKS) -> str:
    """The system prompt listing the available tools and the plan format (deterministic for a given ``tasks``)."""
    lines = [
        "You are an assistant that plans tool calls. Answer with a JSON list of steps "
        '{"task", "id", "dep", "args"}; ids count from 0; dep is [-1] or the ids whose outputs the step uses; '
        'write "<GENERATED>-k" for the output of step k and the file name for a user file. Tools:'
    ]
    for spec in tasks.values():
        args = ", ".join(f"{k}: {v}" for k, v in spec.inputs.items())
        lines.append(f"- {spec.name}({args}) -> {spec.output}")
    return "\n".join(lines)


__all__ = ["DEFAULT_TASKS", "MODALITIES", "TaskSpec", "plan_to_text", "tool_system_prompt"]
