"""Run a validated plan on a :class:`~tool_use.registry.ToolRegistry`: topological order, independent steps in
parallel, per-step time-out, a step budget, artefacts + ``manifest.json`` in an output directory, partial results.

Plans are data. Argument values are never evaluated: a ``"<GENERATED>-k"`` value is replaced by step k's output
object, a value of an image/audio argument is a file name resolved inside the allowed input (then output) directory
with ``Path.resolve().is_relative_to(dir)`` checked, and every other value is passed to the tool as a literal string.

Time-outs: a step that runs longer than ``step_timeout`` seconds is reported as ``timeout`` and abandoned. Python
cannot kill a thread, so its worker (a daemon thread) may keep running in the background until the tool returns;
its result is then discarded. Steps that depend on a failed, timed-out or skipped step are ``skipped``; all others
still run.

>>> from tool_use.registry import ToolRegistry
>>> reg = ToolRegistry()
>>> _ = reg.register("summarization", lambda text: text.split(".")[0] + ".")
>>> plan = [{"task": "summarization", "id": 0, "dep": [-1], "args": {"text": "One. Two."}}]
>>> import tempfile
>>> result = execute_plan(plan, reg, output_dir=tempfile.mkdtemp())
>>> result.status, result.steps[0].output
('ok', 'One.')
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shapeworld.plan_schema import TaskSpec

from .media import confine, load_audio, load_image, save_output
from .registry import ToolRegistry
from .schema import PlanError, parse_reference, validate_plan


@dataclass
class StepResult:
    """What happened to one step. ``status``: ok | failed | timeout | skipped | not_run."""

    id: int
    task: str
    status: str = "not_run"
    output: Any = None
    output_path: str | None = None
    error: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out = {"id": self.id, "task": self.task, "status": self.status, "seconds": round(self.seconds, 4)}
        if self.output_path:
            out["output_path"] = self.output_path
        if isinstance(self.output, str):
            out["output_text"] = self.output
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class ExecutionResult:
    """The outcome of :func:`execute_plan`. ``status``: ok | partial | failed | invalid."""

    plan: Any
    status: str
    steps: list[StepResult] = field(default_factory=list)
    errors: list[PlanError] = field(default_factory=list)
    output_dir: Path | None = None
    manifest_path: Path | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def summary(self) -> str:
        """A readable account: one line per step with its status and where its output is (or why it has none)."""
        lines = [f"plan status: {self.status}"]
        lines += [f"  invalid plan: {e}" for e in self.errors]
        for s in self.steps:
            line = f"  step {s.id} {s.task}: {s.status}"
            if s.status == "ok":
                if isinstance(s.output, str):
                    text = s.output if len(s.output) <= 200 else s.output[:200] + "..."
                    line += f" -> {text!r}"
                if s.output_path:
                    line += f" [{s.output_path}]"
            elif s.error:
                line += f" ({s.error})"
            lines.append(line)
        if self.manifest_path:
            lines.append(f"manifest: {self.manifest_path}")
        return "\n".join(lines)


def _resolve_args(step: dict, spec_inputs: dict[str, str], outputs: dict[int, Any], allowed: list[Path]) -> dict:
    args = {}
    for name, value in step["args"].items():
        k = parse_reference(value)
        modality = spec_inputs.get(name, "text")
        if k is not None:
            args[name] = outputs[k]
        elif modality == "image":
            args[name] = load_image(confine(str(value), allowed))
        elif modality == "audio":
            args[name] = load_audio(confine(str(value), allowed))
        else:
            args[name] = value if isinstance(value, str) else json.dumps(value)
    return args


def _deps(step: dict) -> set[int]:
    refs = {k for v in step["args"].values() if (k := parse_reference(v)) is not None}
    return refs | {d for d in step["dep"] if d >= 0}


def execute_plan(
    plan: list[dict],
    registry: ToolRegistry,
    *,
    output_dir: str | Path,
    input_dir: str | Path | list[str | Path] | None = None,
    step_timeout: float = 120.0,
    max_steps: int = 16,
    max_workers: int = 2,
    request: str | None = None,
    tasks: dict[str, TaskSpec] | None = None,
) -> ExecutionResult:
    """Validate ``plan`` against ``registry.tasks`` and run it.

    Args:
        plan: the parsed plan (list of step dicts, see :mod:`tool_use.schema`).
        registry: the tools.
        output_dir: created if needed; receives ``step{id}_{task}.{txt,png,wav}`` and ``manifest.json``.
        input_dir: folder(s) of user files the plan may name, searched in order, then ``output_dir``
            (``None``: only files in ``output_dir`` may be named).
        step_timeout: seconds one step may run.
        max_steps: plans with more steps are refused (status ``invalid``, code ``too_many_steps``).
        max_workers: steps run at once (independent steps only).
        request: the user's request, recorded in the manifest.
        tasks: the task schema to validate against (default ``registry.tasks``). With a wider schema (e.g.
            ``DEFAULT_TASKS``) a valid plan may name a task the registry has no tool for: that step fails with
            "no tool configured" and the steps not depending on it still run.
    Returns:
        an :class:`ExecutionResult`; a failed step never raises, it is reported in its :class:`StepResult`.
    """
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if input_dir is None:
        input_dir = []
    allowed = [Path(d) for d in (input_dir if isinstance(input_dir, list | tuple) else [input_dir])] + [out_dir]
    schema = tasks if tasks is not None else registry.tasks
    errors = validate_plan(plan, schema)
    if isinstance(plan, list) and len(plan) > max_steps:
        errors.append(PlanError(None, "too_many_steps", f"the plan has {len(plan)} steps; at most {max_steps} run"))
    if errors:
        result = ExecutionResult(plan, "invalid", errors=errors, output_dir=out_dir)
        _write_manifest(result, request)
        return result

    steps = [StepResult(s["id"], s["task"]) for s in plan]
    deps = {s["id"]: _deps(s) for s in plan}
    outputs: dict[int, Any] = {}
    done: queue.Queue = queue.Queue()
    running: dict[int, float] = {}  # id -> deadline
    pending = [s["id"] for s in plan]

    def worker(i: int, args: dict) -> None:
        t0 = time.perf_counter()
        try:
            out = registry[plan[i]["task"]](**args)
            done.put((i, "ok", out, None, time.perf_counter() - t0))
        except Exception as e:  # any tool failure is reported in the step, never raised
            done.put((i, "failed", None, f"{type(e).__name__}: {e}", time.perf_counter() - t0))

    while pending or running:
        for i in list(pending):
            if len(running) >= max_workers:
                break
            bad = [d for d in sorted(deps[i]) if steps[d].status in ("failed", "timeout", "skipped")]
            if bad:
                steps[i].status, steps[i].error = "skipped", f"depends on step {bad[0]} ({steps[bad[0]].status})"
                pending.remove(i)
                continue
            if not all(steps[d].status == "ok" for d in deps[i]):
                continue
            pending.remove(i)
            if plan[i]["task"] not in registry:
                steps[i].status = "failed"
                steps[i].error = f"no tool configured for {plan[i]['task']!r} (configured: {sorted(registry.tasks)})"
                continue
            try:
                args = _resolve_args(plan[i], registry.tasks[plan[i]["task"]].inputs, outputs, allowed)
            except (OSError, ValueError) as e:
                steps[i].status, steps[i].error = "failed", f"{type(e).__name__}: {e}"
                continue
            running[i] = time.monotonic() + step_timeout
            threading.Thread(target=worker, args=(i, args), daemon=True, name=f"plan-step-{i}").start()
        if not running:
            continue  # deps point only backwards, so each pass above settles at least the first pending step
        wait = max(0.0, min(running.values()) - time.monotonic())
        try:
            i, status, out, err, secs = done.get(timeout=wait)
        except queue.Empty:
            now = time.monotonic()
            for j, deadline in list(running.items()):
                if deadline <= now:
                    del running[j]
                    steps[j].status, steps[j].seconds = "timeout", step_timeout
                    steps[j].error = f"no result within {step_timeout:g} s (step abandoned)"
            continue
        if i not in running:  # finished after its time-out: discard
            continue
        del running[i]
        steps[i].status, steps[i].error, steps[i].seconds = status, err, secs
        if status == "ok":
            outputs[i] = out
            steps[i].output = out
            modality = registry.tasks[plan[i]["task"]].output
            try:
                safe = re.sub(r"[^A-Za-z0-9_.-]", "_", plan[i]["task"])  # a registered name never makes a path
                path = save_output(out, modality, out_dir / f"step{i}_{safe}")
                steps[i].output_path = str(path)
            except (OSError, ValueError, TypeError) as e:
                steps[i].error = f"output not saved: {type(e).__name__}: {e}"

    n_ok = sum(s.status == "ok" for s in steps)
    status = "ok" if n_ok == len(steps) else ("failed" if n_ok == 0 else "partial")
    result = ExecutionResult(plan, status, steps=steps, output_dir=out_dir)
    _write_manifest(result, request)
    return result


def _write_manifest(result: ExecutionResult, request: str | None) -> None:
    manifest = {
        "request": request,
        "status": result.status,
        "plan": result.plan,
        "errors": [{"step_id": e.step_id, "code": e.code, "message": e.message} for e in result.errors],
        "steps": [s.to_json() for s in result.steps],
    }
    path = result.output_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    result.manifest_path = path


__all__ = ["ExecutionResult", "StepResult", "execute_plan"]
