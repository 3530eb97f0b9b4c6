"""The task-plan schema shared by the tool runtime, the stage-3 data and ShapeWorld's tool dialogues.

A plan is a JSON list of steps (HuggingGPT convention)::

    [{"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "input.png"}},
     {"task": "text-to-image", "id": 1, "dep": [0], "args": {"text": "<GENERATED>-0"}}]

* ``id``: the step's position, ``0 .. n-1`` in order.
* ``dep``: ``[-1]`` when the step depends on nothing, else exactly the ids its arguments reference.
* ``args``: ``{name: value}``; a value ``"<GENERATED>-k"`` or ``"<resource>-k"`` (the whole string) means "the output
  of step k"; a user-supplied file is named by its file name (``"input.png"``), resolved by the executor inside the
  allowed input directory; any other value is a literal.

Plans are data: nothing in them is ever executed as code.

The tasks (``TaskSpec``, ``DEFAULT_TASKS``, ``MODALITIES``), the canonical plan text (``plan_to_text``) and the
system prompt (``tool_system_prompt``) are defined in :mod:`shapeworld.plan_schema`, below both ShapeWorld's tool
dialogues and this package, and are part of this module's API; parsing and validation are defined here.

>>> plan = [{"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "input.png"}}]
>>> validate_plan(plan)
[]
>>> plan_to_text(plan)
'[{"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "input.png"}}]'
>>> [e.code for e in validate_plan([{"task": "paint", "id": 0, "dep": [-1], "args": {}}])]
['unknown_task']
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from shapeworld.plan_schema import DEFAULT_TASKS, MODALITIES, TaskSpec, plan_to_text, tool_system_prompt

#: File-name suffixes accepted as a user-supplied file of each non-text modality.
FILE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "image": (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"),
    "audio": (".wav", ".flac", ".mp3", ".ogg", ".m4a"),
}

REFERENCE_RE = re.compile(r"^<(GENERATED|resource)>-(\d+)$")
_EMBEDDED_REFERENCE_RE = re.compile(r"<(GENERATED|resource)>-\d+")


PLAN_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://github.com/mage/tool_use/plan_schema.json",
    "title": "MAGE task plan",
    "description": (
        "A list of tool steps. ids are 0..n-1 in order; dep is [-1] when a step depends on nothing, else exactly the "
        "ids its args reference; an arg value '<GENERATED>-k' or '<resource>-k' means the output of step k."
    ),
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["task", "id", "dep", "args"],
        "additionalProperties": False,
        "properties": {
            "task": {"type": "string", "minLength": 1},
            "id": {"type": "integer", "minimum": 0},
            "dep": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": -1}},
            "args": {
                "type": "object",
                "additionalProperties": {"type": ["string", "number", "boolean"]},
            },
        },
    },
}


@dataclass(frozen=True)
class PlanError:
    """One problem in a plan. ``step_id`` is the step's position (``None`` for plan-level problems)."""

    step_id: int | None
    code: str
    message: str

    def __str__(self) -> str:
        where = "plan" if self.step_id is None else f"step {self.step_id}"
        return f"{where}: [{self.code}] {self.message}"


class PlanParseError(ValueError):
    """No JSON plan could be found in a model's output."""


#: Every error code validate_plan can report, with its meaning.
ERROR_CODES: dict[str, str] = {
    "not_a_list": "the plan is not a JSON list",
    "empty_plan": "the plan has no steps",
    "not_an_object": "a step is not a JSON object",
    "missing_field": "a step lacks task/id/dep/args",
    "extra_field": "a step has a field other than task/id/dep/args",
    "bad_type": "a field has the wrong JSON type",
    "bad_id": "ids are not 0..n-1 in order",
    "unknown_task": "the task is not a known tool",
    "missing_argument": "a required argument is absent",
    "extra_argument": "an argument the task does not take",
    "wrong_modality": "an argument's value has the wrong modality",
    "bad_reference": "a reference is embedded in other text instead of being the whole value",
    "missing_step": "dep or a reference names a step that does not exist",
    "self_dependency": "a step depends on itself",
    "forward_dependency": "a step depends on a later step",
    "cycle": "steps depend on each other in a cycle",
    "dep_mismatch": "dep disagrees with the steps the args reference",
}


def parse_reference(value: Any) -> int | None:
    """Return k when ``value`` is exactly ``"<GENERATED>-k"`` / ``"<resource>-k"``, else ``None``."""
    if not isinstance(value, str):
        return None
    m = REFERENCE_RE.match(value.strip())
    return int(m.group(2)) if m else None


def step_references(step: dict) -> dict[str, int]:
    """``{arg_name: k}`` for every argument of ``step`` that references the output of step k."""
    args = step.get("args") if isinstance(step, dict) else None
    if not isinstance(args, dict):
        return {}
    return {name: k for name, value in args.items() if (k := parse_reference(value)) is not None}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_step_shape(i: int, step: Any, errors: list[PlanError]) -> bool:
    """Check one step's fields and types; return True when it is well-formed enough for the deeper checks."""
    if not isinstance(step, dict):
        errors.append(PlanError(i, "not_an_object", f"expected an object, got {type(step).__name__}"))
        return False
    ok = True
    for name in ("task", "id", "dep", "args"):
        if name not in step:
            errors.append(PlanError(i, "missing_field", f"missing field {name!r}"))
            ok = False
    extra = sorted(set(step) - {"task", "id", "dep", "args"})
    if extra:
        errors.append(PlanError(i, "extra_field", f"unexpected field(s) {extra}; a step has task, id, dep, args"))
    if "task" in step and not isinstance(step["task"], str):
        errors.append(PlanError(i, "bad_type", f"task must be a string, got {step['task']!r}"))
        ok = False
    if "id" in step:
        if not _is_int(step["id"]):
            errors.append(PlanError(i, "bad_type", f"id must be an integer, got {step['id']!r}"))
        elif step["id"] != i:
            errors.append(PlanError(i, "bad_id", f"id is {step['id']}, expected {i} (ids are 0..n-1 in order)"))
    if "dep" in step:
        dep = step["dep"]
        if not isinstance(dep, list) or not dep or not all(_is_int(d) for d in dep):
            errors.append(
                PlanError(i, "bad_type", f"dep must be a non-empty list of integers ([-1] for none), got {dep!r}")
            )
            ok = False
    if "args" in step:
        args = step["args"]
        if not isinstance(args, dict):
            errors.append(PlanError(i, "bad_type", f"args must be an object, got {args!r}"))
            ok = False
        else:
            for name, value in args.items():
                if not isinstance(value, str | int | float | bool) or value is None:
                    errors.append(PlanError(i, "bad_type", f"arg {name!r} must be a string or number, got {value!r}"))
    return ok


def _check_args(i: int, step: dict, plan: list, tasks: dict[str, TaskSpec], errors: list[PlanError]) -> None:
    spec = tasks[step["task"]]
    args = step["args"]
    for name in spec.inputs:
        if name not in args:
            errors.append(
                PlanError(i, "missing_argument", f"{spec.name} needs argument {name!r} ({spec.inputs[name]})")
            )
    for name in args:
        if name not in spec.inputs:
            errors.append(
                PlanError(
                    i, "extra_argument", f"{spec.name} takes no argument {name!r}; it takes {sorted(spec.inputs)}"
                )
            )
    for name, value in args.items():
        want = spec.inputs.get(name)
        if want is None:
            continue
        k = parse_reference(value)
        if k is not None:
            src = plan[k] if 0 <= k < len(plan) and isinstance(plan[k], dict) else None
            src_spec = tasks.get(src.get("task")) if src is not None and isinstance(src.get("task"), str) else None
            if src_spec is not None and src_spec.output != want:
                errors.append(
                    PlanError(
                        i,
                        "wrong_modality",
                        f"arg {name!r} needs {want} but step {k} ({src_spec.name}) produces {src_spec.output}",
                    )
                )
        elif isinstance(value, str) and _EMBEDDED_REFERENCE_RE.search(value):
            errors.append(
                PlanError(i, "bad_reference", f"arg {name!r}: a reference must be the whole value, got {value!r}")
            )
        elif want in FILE_SUFFIXES:
            if not (isinstance(value, str) and value.strip().lower().endswith(FILE_SUFFIXES[want])):
                errors.append(
                    PlanError(
                        i,
                        "wrong_modality",
                        f"arg {name!r} needs {want}: a step reference or a file name ending "
                        f"in one of {list(FILE_SUFFIXES[want])}, got {value!r}",
                    )
                )


def _check_deps(i: int, step: dict, n: int, errors: list[PlanError]) -> set[int]:
    """Check dep and the references of step i; return the (existing, earlier or later) ids it depends on."""
    dep = step.get("dep")
    dep_ids = set(dep) - {-1} if isinstance(dep, list) and all(_is_int(d) for d in dep) else set()
    mixed = isinstance(dep, list) and -1 in dep and len(dep) > 1
    if mixed:
        errors.append(PlanError(i, "dep_mismatch", f"dep {dep} mixes -1 (no dependency) with step ids"))
    refs = step_references(step)
    ref_ids = set(refs.values())
    for k in sorted(dep_ids | ref_ids):
        if k == i:
            errors.append(PlanError(i, "self_dependency", f"step {i} depends on its own output"))
        elif k < 0 or k >= n:
            errors.append(PlanError(i, "missing_step", f"depends on step {k}, but the plan has steps 0..{n - 1}"))
        elif k > i:
            errors.append(
                PlanError(i, "forward_dependency", f"depends on later step {k}; steps may only use earlier ones")
            )
    if not mixed and isinstance(dep, list) and all(_is_int(d) for d in dep) and dep_ids != ref_ids:
        expected = sorted(ref_ids) or [-1]
        errors.append(
            PlanError(
                i,
                "dep_mismatch",
                f"dep is {dep} but the args reference {sorted(ref_ids) or 'no step'}; expected dep {expected}",
            )
        )
    return {k for k in dep_ids | ref_ids if 0 <= k < n and k != i}


def _find_cycles(graph: dict[int, set[int]]) -> list[list[int]]:
    """Strongly connected components with more than one node (self loops are reported separately)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    sccs: list[list[int]] = []
    counter = [0]

    def visit(v: int) -> None:  # Tarjan; plans are short, recursion depth is bounded by the step count
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sccs


def validate_plan(plan: Any, tasks: dict[str, TaskSpec] = DEFAULT_TASKS) -> list[PlanError]:
    """Every problem of ``plan`` (a parsed JSON value) against ``tasks``; an empty list means valid.

    Errors are reported all at once, each with the step position, a code from :data:`ERROR_CODES` and a message
    naming the field, the value and what was expected.
    """
    if not isinstance(plan, list):
        return [PlanError(None, "not_a_list", f"a plan is a JSON list of steps, got {type(plan).__name__}")]
    if not plan:
        return [PlanError(None, "empty_plan", "the plan has no steps")]
    errors: list[PlanError] = []
    n = len(plan)
    graph: dict[int, set[int]] = {}
    for i, step in enumerate(plan):
        if not _check_step_shape(i, step, errors):
            if isinstance(step, dict):
                graph[i] = _check_deps(i, step, n, errors) if isinstance(step.get("dep"), list) else set()
            continue
        if step["task"] not in tasks:
            errors.append(PlanError(i, "unknown_task", f"unknown task {step['task']!r}; known tasks: {sorted(tasks)}"))
        else:
            _check_args(i, step, plan, tasks, errors)
        graph[i] = _check_deps(i, step, n, errors)
    for comp in _find_cycles(graph):
        errors.append(PlanError(comp[0], "cycle", f"steps {comp} depend on each other in a cycle"))
    return errors


_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def _first_json_list(text: str) -> list | None:
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\[", text):
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, list) and (not value or any(isinstance(v, dict) for v in value)):
            return value
    return None


def extract_plan(text: str) -> list[dict]:
    """Find the JSON plan in free model output: a fenced ```json block or bare JSON, with prose around it.

    Returns the first JSON list (of objects) found — fenced blocks first, then the bare text. Only parses JSON;
    raises :class:`PlanParseError` (naming what was seen) when there is none. The result is not validated: call
    :func:`validate_plan`.
    """
    if not isinstance(text, str):
        raise PlanParseError(f"expected model output as a string, got {type(text).__name__}")
    for block in _FENCE_RE.findall(text):
        found = _first_json_list(block)
        if found is not None:
            return found
    found = _first_json_list(text)
    if found is not None:
        return found
    snippet = text.strip().replace("\n", " ")
    snippet = snippet[:120] + ("..." if len(snippet) > 120 else "")
    raise PlanParseError(f"no JSON list of steps found in the model output: {snippet!r}")


def write_json_schema(path: str) -> None:
    """Write :data:`PLAN_JSON_SCHEMA` to ``path`` (how ``tool_use/plan_schema.json`` is produced)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(PLAN_JSON_SCHEMA, f, indent=2)
        f.write("\n")


__all__ = [
    "DEFAULT_TASKS",
    "ERROR_CODES",
    "FILE_SUFFIXES",
    "MODALITIES",
    "PLAN_JSON_SCHEMA",
    "PlanError",
    "PlanParseError",
    "TaskSpec",
    "extract_plan",
    "parse_reference",
    "plan_to_text",
    "step_references",
    "tool_system_prompt",
    "validate_plan",
    "write_json_schema",
]
