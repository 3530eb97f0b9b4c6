"""One `mage agent` request for the web chat's agent tab, along `tool_use/cli.py`'s path.

The request is planned with the tool system prompt (`inference.generation.generate_text`, greedy), the plan is parsed
(`extract_plan`), validated (`validate_plan`) and executed (`execute_plan`) on a registry from
`tool_use.cli.build_registry` — MAGE itself in memory plus the ShapeWorld renderer, overlaid by a ``--tools`` YAML.
Each request gets its own output folder; an uploaded image is staged into its ``inputs`` folder, and those two
folders are the only files a plan may name (the executor's confinement), with the CLI's step time limit and step cap.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from inference import generation
from tool_use.cli import build_registry
from tool_use.executor import execute_plan
from tool_use.registry import registry_from_config
from tool_use.schema import DEFAULT_TASKS, PlanParseError, extract_plan, step_references, tool_system_prompt


@dataclass
class AgentOutcome:
    """What the agent tab shows: the model's raw output, the plan (if any), the steps and a one-line status."""

    request: str
    raw: str = ""
    plan: list[dict] | None = None
    status: str = "unparsable"
    message: str = ""
    steps: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    output_dir: Path | None = None

    def plan_rows(self) -> list[list[str]]:
        """One row per step: id, task, depends on, arguments, status, output (text or file name) or error."""
        by_id = {s.id: s for s in self.steps}
        rows = []
        for step in self.plan or []:
            if not isinstance(step, dict):
                continue
            sid = step.get("id")
            deps = (
                sorted(
                    {d for d in step.get("dep", []) if isinstance(d, int) and d >= 0}
                    | set(step_references(step).values())
                )
                if isinstance(step.get("args"), dict)
                else []
            )
            result = by_id.get(sid)
            status = result.status if result else ("invalid" if self.errors else "not run")
            if result and result.status == "ok":
                shown = result.output if isinstance(result.output, str) else Path(result.output_path or "").name
            else:
                shown = (result.error or "") if result else ""
            rows.append(
                [
                    str(sid),
                    str(step.get("task")),
                    ", ".join(map(str, deps)) or "—",
                    json.dumps(step.get("args"), ensure_ascii=False),
                    status,
                    shown,
                ]
            )
        return rows

    def images(self) -> list[tuple[Any, str]]:
        """`(PIL image, caption)` for every step that produced an image."""
        return [
            (s.output, f"step {s.id} {s.task}")
            for s in self.steps
            if s.status == "ok" and isinstance(s.output, Image.Image)
        ]


class AgentRunner:
    """Runs agent requests one at a time on the served model (the CLI's defaults for limits)."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        work_dir: str | Path | None = None,
        tools: str | None = None,
        step_timeout: float = 120.0,
        max_steps: int = 16,
        max_workers: int = 2,
        max_new_tokens: int = 256,
    ):
        self.model, self.processor = model, processor
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="mage-serve-agent-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.configured = registry_from_config(tools) if tools else None  # read (and checked) before serving
        self.registry_args = argparse.Namespace(no_default_tools=False, tools=tools)
        self.step_timeout, self.max_steps, self.max_workers = step_timeout, max_steps, max_workers
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()

    def run(self, request: str, image_path: str | Path | None = None) -> AgentOutcome:
        """Plan, validate and execute `request` (an uploaded image, if any, is staged under its own file name)."""
        outcome = AgentOutcome(request=request)
        if not request or not request.strip():
            outcome.status, outcome.message = "empty", "Type a request first."
            return outcome
        out_dir = self.work_dir / uuid.uuid4().hex[:12]
        inputs = out_dir / "inputs"
        inputs.mkdir(parents=True)
        outcome.output_dir = out_dir
        if image_path:
            shutil.copyfile(image_path, inputs / Path(image_path).name)
        with self._lock:
            outcome.raw = generation.generate_text(
                self.model, self.processor, request, system=tool_system_prompt(), max_new_tokens=self.max_new_tokens
            )
            try:
                outcome.plan = extract_plan(outcome.raw)
            except PlanParseError as error:
                outcome.message = f"no plan: {error}"
                return outcome
            registry = build_registry(self.registry_args, self.model, self.processor, self.configured)
            result = execute_plan(
                outcome.plan,
                registry,
                output_dir=out_dir,
                input_dir=[inputs],
                step_timeout=self.step_timeout,
                max_steps=self.max_steps,
                max_workers=self.max_workers,
                request=request,
                tasks={**DEFAULT_TASKS, **registry.tasks},
            )
        outcome.status, outcome.steps = result.status, result.steps
        outcome.errors = [str(e) for e in result.errors]
        outcome.message = f"plan status: {result.status}" + "".join(f"\ninvalid plan: {e}" for e in outcome.errors)
        return outcome


__all__ = ["AgentOutcome", "AgentRunner"]
