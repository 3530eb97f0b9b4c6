"""ShapeWorld stage-3 tool dialogues: every plan valid under the shared schema, varied structure, held-out split."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

schema = pytest.importorskip("tool_use.schema")

from shapeworld.tools import TEMPLATES, tool_dialogue  # noqa: E402
from shapeworld.world import get_difficulty  # noqa: E402

D = get_difficulty("default")


def _dialogues(split="train", n=400, seed=0):
    return [tool_dialogue(i, seed, D, split=split) for i in range(n)]


def test_every_plan_is_valid_and_is_the_answer():
    for row in _dialogues() + _dialogues("eval", 100):
        system, human, gpt = row["conversations"]
        assert system["from"] == "system" and system["value"] == schema.tool_system_prompt()
        assert human["from"] == "human" and gpt["from"] == "gpt"
        plan = schema.extract_plan(gpt["value"])
        assert plan == row["plan"] == json.loads(gpt["value"])
        assert gpt["value"] == schema.plan_to_text(plan)
        errors = schema.validate_plan(plan)
        assert errors == [], (human["value"], errors)


def test_structure_varies():
    rows = _dialogues()
    lengths = Counter(len(r["plan"]) for r in rows)
    assert set(lengths) == {1, 2, 3, 4}
    assert set(Counter(r["template"] for r in rows)) == set(TEMPLATES)
    tasks = Counter(step["task"] for r in rows for step in r["plan"])
    assert set(tasks) == set(schema.DEFAULT_TASKS)

    def is_branch(plan):  # some step's output used by two later steps
        uses = Counter(d for step in plan for d in step["dep"] if d >= 0)
        return any(v > 1 for v in uses.values())

    assert any(is_branch(r["plan"]) for r in rows)
    assert any(len(r["plan"]) >= 3 and not is_branch(r["plan"]) for r in rows)


def test_the_issue_example_is_planned_as_a_chain():
    rows = [r for r in _dialogues() if r["template"] == "draw_describe_speak"]
    assert rows
    request = rows[0]["conversations"][1]["value"]
    assert request.startswith("Draw ") and request.endswith("then describe it and read the description aloud.")
    assert [s["task"] for s in rows[0]["plan"]] == ["text-to-image", "image-to-text", "text-to-speech"]


def test_held_out_split_differs_and_is_deterministic():
    train = [r["conversations"][1]["value"] for r in _dialogues("train", 200)]
    held_out = [r["conversations"][1]["value"] for r in _dialogues("eval", 200)]
    assert train != held_out
    assert _dialogues("eval", 20) == _dialogues("eval", 20)


def test_shapeworld_imports_no_tool_code():
    """The data generator writes plans with `shapeworld.plan_schema`; it never loads `tool_use` (layering)."""
    script = "import sys, shapeworld; print(sorted(m for m in sys.modules if m.split('.')[0] == 'tool_use'))"
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
