"""Plan schema: valid plans, every kind of broken plan (each error named), extraction from free text."""

import json
from pathlib import Path

import pytest

from tool_use.schema import (
    DEFAULT_TASKS,
    ERROR_CODES,
    PLAN_JSON_SCHEMA,
    PlanParseError,
    TaskSpec,
    extract_plan,
    plan_to_text,
    tool_system_prompt,
    validate_plan,
)

VALID = [
    {"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "input.png"}},
    {"task": "translation", "id": 1, "dep": [0], "args": {"text": "<GENERATED>-0"}},
    {"task": "visual-question-answering", "id": 2, "dep": [-1], "args": {"image": "input.png", "text": "How many?"}},
    {"task": "text-to-image", "id": 3, "dep": [1], "args": {"text": "<resource>-1"}},
]


def codes(plan, tasks=DEFAULT_TASKS):
    return [(e.step_id, e.code) for e in validate_plan(plan, tasks)]


def mutate(i, **changes):
    plan = json.loads(json.dumps(VALID))
    plan[i].update(changes)
    return plan


def test_valid_plan_has_no_errors():
    assert validate_plan(VALID) == []


def test_dep_includes_all_referenced_steps_exactly():
    plan = mutate(3, dep=[1, 2], args={"text": "<resource>-1"})
    # step 3 references only step 1 but dep lists 1 and 2 -> mismatch
    assert codes(plan) == [(3, "dep_mismatch")]
    assert codes(mutate(3, dep=[1])) == []


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        ({"task": "x"}, [(None, "not_a_list")]),
        ([], [(None, "empty_plan")]),
        (["step"], [(0, "not_an_object")]),
        ([{"task": "summarization", "id": 0, "dep": [-1]}], [(0, "missing_field")]),
        (
            [{"task": "summarization", "id": 0, "dep": [-1], "args": {"text": "a"}, "why": "x"}],
            [(0, "extra_field")],
        ),
        ([{"task": "summarization", "id": "0", "dep": [-1], "args": {"text": "a"}}], [(0, "bad_type")]),
        ([{"task": "summarization", "id": 0, "dep": -1, "args": {"text": "a"}}], [(0, "bad_type")]),
        ([{"task": "summarization", "id": 0, "dep": [-1], "args": {"text": ["a"]}}], [(0, "bad_type")]),
        ([{"task": "summarization", "id": 1, "dep": [-1], "args": {"text": "a"}}], [(0, "bad_id")]),
        ([{"task": "paint", "id": 0, "dep": [-1], "args": {"text": "a"}}], [(0, "unknown_task")]),
        ([{"task": "summarization", "id": 0, "dep": [-1], "args": {}}], [(0, "missing_argument")]),
        (
            [{"task": "summarization", "id": 0, "dep": [-1], "args": {"text": "a", "lang": "fr"}}],
            [(0, "extra_argument")],
        ),
        ([{"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "a cat"}}], [(0, "wrong_modality")]),
        (
            [{"task": "summarization", "id": 0, "dep": [-1], "args": {"text": "see <GENERATED>-0"}}],
            [(0, "bad_reference")],
        ),
        ([{"task": "summarization", "id": 0, "dep": [3], "args": {"text": "<GENERATED>-3"}}], [(0, "missing_step")]),
        ([{"task": "summarization", "id": 0, "dep": [0], "args": {"text": "<GENERATED>-0"}}], [(0, "self_dependency")]),
        (
            [{"task": "summarization", "id": 0, "dep": [-1, 0], "args": {"text": "a"}}],
            [(0, "dep_mismatch"), (0, "self_dependency")],
        ),
    ],
)
def test_each_broken_plan_is_named(plan, expected):
    assert codes(plan) == expected
    assert all(code in ERROR_CODES for _, code in expected)


def test_wrong_modality_of_a_reference():
    plan = [
        {"task": "text-to-speech", "id": 0, "dep": [-1], "args": {"text": "hello"}},
        {"task": "image-to-text", "id": 1, "dep": [0], "args": {"image": "<GENERATED>-0"}},
    ]
    errors = validate_plan(plan)
    assert [(e.step_id, e.code) for e in errors] == [(1, "wrong_modality")]
    assert "needs image" in errors[0].message and "produces audio" in errors[0].message


def test_forward_dependency_and_cycle():
    plan = [
        {"task": "summarization", "id": 0, "dep": [1], "args": {"text": "<GENERATED>-1"}},
        {"task": "translation", "id": 1, "dep": [0], "args": {"text": "<GENERATED>-0"}},
    ]
    assert codes(plan) == [(0, "forward_dependency"), (0, "cycle")]
    plan[1] = {"task": "translation", "id": 1, "dep": [-1], "args": {"text": "hi"}}
    assert codes(plan) == [(0, "forward_dependency")]


def test_dep_disagreeing_with_references():
    assert codes(mutate(1, dep=[-1])) == [(1, "dep_mismatch")]
    err = validate_plan(mutate(1, dep=[-1]))[0]
    assert "expected dep [0]" in err.message


def test_all_errors_reported_at_once():
    plan = [
        {"task": "paint", "id": 0, "dep": [-1], "args": {}},
        {"task": "summarization", "id": 5, "dep": [-1], "args": {}},
    ]
    assert codes(plan) == [(0, "unknown_task"), (1, "bad_id"), (1, "missing_argument")]
    assert "known tasks" in str(validate_plan(plan)[0])


def test_custom_tasks():
    tasks = {"shout": TaskSpec("shout", {"text": "text"}, "text")}
    plan = [{"task": "shout", "id": 0, "dep": [-1], "args": {"text": "hi"}}]
    assert validate_plan(plan, tasks) == []
    assert codes(plan) == [(0, "unknown_task")]
    with pytest.raises(ValueError, match="modalities"):
        TaskSpec("bad", {"x": "video"}, "text")


def test_json_schema_file_matches_and_accepts_valid_plans():
    jsonschema = pytest.importorskip("jsonschema")
    on_disk = json.loads((Path(__file__).parents[1] / "tool_use" / "plan_schema.json").read_text())
    assert on_disk == PLAN_JSON_SCHEMA
    jsonschema.validate(VALID, PLAN_JSON_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{"task": "x", "id": 0, "dep": [-1]}], PLAN_JSON_SCHEMA)


@pytest.mark.parametrize(
    "text",
    [
        plan_to_text(VALID),
        "Sure! Here is the plan:\n```json\n" + json.dumps(VALID, indent=2) + "\n```\nLet me know.",
        "```\n" + plan_to_text(VALID) + "\n```",
        "I will use [three] tools: " + plan_to_text(VALID) + " and then answer [done].",
    ],
)
def test_extract_plan_from_free_text(text):
    assert extract_plan(text) == VALID


@pytest.mark.parametrize("text", ["", "no plan here", '[{"task": "x", "id": 0', "[1, 2, 3]"])
def test_extract_plan_failure(text):
    with pytest.raises(PlanParseError, match="no JSON list of steps"):
        extract_plan(text)


def test_plan_to_text_is_canonical_and_round_trips():
    text = plan_to_text(VALID)
    assert text.startswith('[{"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "input.png"}}, ')
    assert json.loads(text) == VALID


def test_system_prompt_lists_every_tool():
    prompt = tool_system_prompt()
    for name, spec in DEFAULT_TASKS.items():
        assert f"- {name}(" in prompt and f"-> {spec.output}" in prompt
    assert tool_system_prompt() == prompt


def test_plan_vocabulary_is_defined_once_in_shapeworld():
    """Tasks, plan text and system prompt live in `shapeworld.plan_schema`; `tool_use.schema` and `tool_use` export
    the same objects, so ShapeWorld's plans and the validator cannot drift apart."""
    import shapeworld.plan_schema as base
    import tool_use
    import tool_use.schema as schema

    for name in base.__all__:
        assert getattr(schema, name) is getattr(base, name), name
        assert name in schema.__all__
    for name in ("DEFAULT_TASKS", "TaskSpec", "plan_to_text", "tool_system_prompt"):
        assert getattr(tool_use, name) is getattr(base, name), name
