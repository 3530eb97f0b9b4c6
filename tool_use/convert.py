"""HuggingGPT / TaskBench records → LLaVA-format stage-3 conversations whose answers are plans.

Accepted records (JSON list or JSONL, one record per row):

* **HuggingGPT style** — a request and its parsed task list in our schema (HuggingGPT's task-planning output):
  ``{"id"?, "user_input" | "request" | "instruction" | "user_request": str, "tasks" | "plan": [{"task", "id", "dep",
  "args"}] or that list as a JSON string}``.
* **TaskBench style** (``data_huggingface/data.json``): ``{"id", "user_request", "task_nodes": [{"task": "Image
  Classification", "arguments": ["example.jpg" | "<node-0>" | {"name", "value"}, ...]}], "task_links": [...]}``.
  Task names are normalised ("Image Classification" → "image-classification"); ``<node-k>`` becomes
  ``<GENERATED>-k``; positional arguments are given the task's argument names by modality (a reference has the
  modality of the referenced task's output, a literal is an image/audio file by its extension, else text — TaskBench's
  ``get_content_type`` rule); ``dep`` is derived from the references, as our schema requires.

Each converted plan is validated; a record that cannot be converted, or whose plan is invalid for ``tasks``, is
skipped and counted with its row number and reason — never written half-right.

Output rows (the format of ``shapeworld.tools``)::

    {"id": ..., "conversations": [{"from": "system", "value": tool_system_prompt(tasks)},
                                  {"from": "human", "value": request},
                                  {"from": "gpt", "value": plan_to_text(plan)}]}

Usage: ``python -m tool_use.convert records.jsonl stage3.json``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shapeworld.plan_schema import DEFAULT_TASKS, TaskSpec, plan_to_text, tool_system_prompt

from .schema import FILE_SUFFIXES, validate_plan

REQUEST_KEYS = ("user_input", "request", "instruction", "user_request")
_NODE_RE = re.compile(r"^<node-(\d+)>$")


class ConversionError(ValueError):
    """A record that cannot become a plan; ``reason`` is a short category for the skip report."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class ConversionReport:
    """What :func:`convert_records` did: rows written, and every skipped row as ``(row number, id, message)``."""

    converted: int = 0
    skipped: list[tuple[int, Any, str]] = field(default_factory=list)

    @property
    def reasons(self) -> Counter:
        return Counter(msg.split(":", 1)[0] for _, _, msg in self.skipped)

    def summary(self) -> str:
        lines = [f"converted {self.converted}, skipped {len(self.skipped)}"]
        lines += [f"  {reason}: {n}" for reason, n in self.reasons.most_common()]
        return "\n".join(lines)


def normalise_task_name(name: str) -> str:
    """ "Image Classification" / "image_classification" / "Image-to-Text" → "image-classification" / "image-to-text"."""
    return re.sub(r"[\s_]+", "-", str(name).strip().lower())


def _literal_modality(value: str) -> str:
    low = value.strip().strip("'\"").lower()
    for modality, suffixes in FILE_SUFFIXES.items():
        if low.endswith(suffixes):
            return modality
    return "text"


def _request(record: dict) -> str:
    for key in REQUEST_KEYS:
        if isinstance(record.get(key), str) and record[key].strip():
            return record[key].strip()
    raise ConversionError("no request", f"expected a non-empty string in one of {list(REQUEST_KEYS)}")


def hugginggpt_to_plan(record: dict, tasks: dict[str, TaskSpec] = DEFAULT_TASKS) -> list[dict]:
    """The plan of a HuggingGPT-style record (task names normalised, ``<resource>-k`` kept)."""
    plan = record.get("tasks", record.get("plan"))
    if isinstance(plan, str):
        try:
            plan = json.loads(plan)
        except json.JSONDecodeError as e:
            raise ConversionError("tasks not JSON", str(e)) from e
    if not isinstance(plan, list):
        raise ConversionError("no plan", "expected `tasks` or `plan` as a list of steps")
    out = []
    for step in plan:
        if not isinstance(step, dict):
            raise ConversionError("bad step", f"expected an object, got {step!r}")
        step = dict(step)
        if isinstance(step.get("task"), str):
            step["task"] = normalise_task_name(step["task"])
        out.append(step)
    return out


def taskbench_to_plan(record: dict, tasks: dict[str, TaskSpec] = DEFAULT_TASKS) -> list[dict]:
    """The plan of a TaskBench record (see module docstring for the argument-naming rule)."""
    nodes = record.get("task_nodes")
    if isinstance(nodes, str):
        nodes = json.loads(nodes)
    if not isinstance(nodes, list) or not nodes:
        raise ConversionError("no task_nodes", "expected a non-empty list")
    names = [normalise_task_name(n.get("task", "")) if isinstance(n, dict) else "" for n in nodes]
    plan = []
    for i, (node, task) in enumerate(zip(nodes, names)):
        spec = tasks.get(task)
        if spec is None:
            raise ConversionError("unknown task", f"node {i}: {task!r} is not one of {sorted(tasks)}")
        free = {m: [n for n, mod in spec.inputs.items() if mod == m] for m in ("text", "image", "audio")}
        args, deps = {}, set()
        for raw in node.get("arguments", []):
            name = None
            if isinstance(raw, dict):
                name = raw.get("name") if raw.get("name") in spec.inputs else None
                raw = raw.get("value", next(iter(raw.values()), ""))
            if isinstance(raw, list):
                raw = " ".join(map(str, raw))
            value = str(raw)
            m = _NODE_RE.match(value.strip())
            if m:
                k = int(m.group(1))
                if not 0 <= k < len(names) or k == i:
                    raise ConversionError("bad reference", f"node {i}: {value!r} names no other node")
                modality = tasks[names[k]].output if names[k] in tasks else "text"
                value, _ = f"<GENERATED>-{k}", deps.add(k)
            else:
                modality = _literal_modality(value)
            if name is None:
                if not free.get(modality):
                    raise ConversionError(
                        "unplaceable argument",
                        f"node {i} ({task}): no free {modality} argument for {value!r}; {task} takes {spec.inputs}",
                    )
                name = free[modality][0]
            if name in args:
                raise ConversionError("duplicate argument", f"node {i} ({task}): two values for {name!r}")
            for lst in free.values():
                if name in lst:
                    lst.remove(name)
            args[name] = value
        plan.append({"task": task, "id": i, "dep": sorted(deps) or [-1], "args": args})
    return plan


def record_to_llava(
    record: dict, tasks: dict[str, TaskSpec] = DEFAULT_TASKS, *, row: int = 0, system_prompt: bool = True
) -> dict:
    """One record → one LLaVA row; raises :class:`ConversionError` (reason + detail) when it cannot."""
    if not isinstance(record, dict):
        raise ConversionError("not an object", type(record).__name__)
    request = _request(record)
    plan = taskbench_to_plan(record, tasks) if "task_nodes" in record else hugginggpt_to_plan(record, tasks)
    errors = validate_plan(plan, tasks)
    if errors:
        raise ConversionError("invalid plan", "; ".join(map(str, errors)))
    turns = [{"from": "human", "value": request}, {"from": "gpt", "value": plan_to_text(plan)}]
    if system_prompt:
        turns.insert(0, {"from": "system", "value": tool_system_prompt(tasks)})
    return {"id": str(record.get("id", f"plan-{row:06d}")), "conversations": turns}


def convert_records(
    records: Iterable[dict], tasks: dict[str, TaskSpec] = DEFAULT_TASKS, system_prompt: bool = True
) -> tuple[list[dict], ConversionReport]:
    """Convert every record; the report lists each skipped row (number, id, reason: detail)."""
    rows, report = [], ConversionReport()
    for i, record in enumerate(records):
        try:
            rows.append(record_to_llava(record, tasks, row=i, system_prompt=system_prompt))
            report.converted += 1
        except (ConversionError, json.JSONDecodeError) as e:
            rid = record.get("id") if isinstance(record, dict) else None
            report.skipped.append((i, rid, str(e)))
    return rows, report


def read_records(path: str | Path) -> list[Any]:
    """A JSON list or JSONL file; an unreadable JSONL line is kept as ``None`` (then skipped and counted)."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a valid JSON list (line {e.lineno}, column {e.colno}: {e.msg})") from e
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append(None)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tool_use.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="HuggingGPT/TaskBench records, JSON list or JSONL")
    parser.add_argument("output", help="LLaVA-format JSON list to write")
    parser.add_argument("--no-system-prompt", action="store_true", help="omit the system turn listing the tools")
    args = parser.parse_args(argv)
    rows, report = convert_records(read_records(args.input), system_prompt=not args.no_system_prompt)
    Path(args.output).write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    print(report.summary())
    for row, rid, msg in report.skipped[:20]:
        print(f"  row {row} (id {rid}): {msg}")
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "ConversionError",
    "ConversionReport",
    "convert_records",
    "hugginggpt_to_plan",
    "normalise_task_name",
    "read_records",
    "record_to_llava",
    "taskbench_to_plan",
]
