"""Plan metrics as TaskBench defines them (microsoft/JARVIS ``taskbench/evaluate.py``), for ``mage eval --benchmark plans``.

Our reading of TaskBench's "no matching" metrics, applied to our plan format:

* **node F1** — per sample, the *set* of task names in the gold and the predicted plan; counts are summed over all
  samples (micro), ``F1 = 2PR/(P+R)`` with ``P = TP / |predicted|``, ``R = TP / |gold|``. TaskBench only counts names
  of known tools (``labels=types``): a predicted name that is not a tool is ignored, not a false positive.
  ``node_f1`` follows that; ``node_f1_strict`` counts unknown names as false positives.
* **edge F1** — per sample, the set of ``(source task, target task)`` pairs, one per step k that step i uses (by an
  ``<GENERATED>-k`` argument or in ``dep``; self-links dropped, as TaskBench does); micro F1 as above.
* **argument name F1** — per sample, the set of ``"{task}-{arg name}"`` strings; micro F1.
* **argument name-value F1** — per sample, the set of ``"{task}-{arg name}-{value}"``; a reference's value is the
  task name of the step it points to (TaskBench replaces ``<node-k>`` by the source tool's name), so plans that
  number their steps differently still agree.
* **parse / well-formed / valid / executable rate** — share of predictions from which a JSON plan could be
  extracted; whose plan has the right *shape* (a non-empty list of steps with task/id/dep/args of the right types and
  ids 0..n-1); which :func:`~tool_use.schema.validate_plan` accepts in full (known tools, arguments, modalities,
  acyclic dependencies that agree with the references) — a *valid* plan; and which are valid and use only tasks in
  ``available_tasks`` (the tools actually configured; default: all of ``tasks``, then executable = valid).

One deliberate difference: TaskBench drops predictions it cannot parse from the support; here they count as empty
plans (every gold node, edge and argument a false negative), which is stricter and keeps the support equal to the
number of samples. Exact-match rate (predicted plan == gold plan after canonicalising references) is reported too.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from inference.generation import generate_texts
from shapeworld.plan_schema import DEFAULT_TASKS, TaskSpec

from .schema import PlanParseError, extract_plan, parse_reference, validate_plan

SHAPE_CODES = {"not_a_list", "empty_plan", "not_an_object", "missing_field", "extra_field", "bad_type", "bad_id"}


def _steps(plan: Any) -> list[dict]:
    """The well-formed-enough steps of a (possibly invalid) plan: dicts with a string task."""
    if not isinstance(plan, list):
        return []
    return [s for s in plan if isinstance(s, dict) and isinstance(s.get("task"), str)]


def _task_of(plan: list, k: int) -> str | None:
    if 0 <= k < len(plan) and isinstance(plan[k], dict) and isinstance(plan[k].get("task"), str):
        return plan[k]["task"]
    return None


def plan_nodes(plan: Any) -> set[str]:
    return {s["task"] for s in _steps(plan)}


def plan_edges(plan: Any) -> set[tuple[str, str]]:
    edges = set()
    if not isinstance(plan, list):
        return edges
    for i, step in enumerate(plan):
        if not isinstance(step, dict) or not isinstance(step.get("task"), str):
            continue
        ks = set()
        args = step.get("args")
        if isinstance(args, dict):
            ks |= {k for v in args.values() if (k := parse_reference(v)) is not None}
        dep = step.get("dep")
        if isinstance(dep, list):
            ks |= {d for d in dep if isinstance(d, int) and not isinstance(d, bool) and d >= 0}
        for k in ks:
            src = _task_of(plan, k)
            if src is not None and k != i:
                edges.add((src, step["task"]))
    return edges


def plan_arguments(plan: Any) -> tuple[set[str], set[str]]:
    """``({"task-name"}, {"task-name-value"})`` with references replaced by the referenced step's task name."""
    names, values = set(), set()
    if not isinstance(plan, list):
        return names, values
    for i, step in enumerate(plan):
        if (
            not isinstance(step, dict)
            or not isinstance(step.get("task"), str)
            or not isinstance(step.get("args"), dict)
        ):
            continue
        for name, value in step["args"].items():
            k = parse_reference(value)
            if k is not None:
                if k == i:
                    continue
                value = _task_of(plan, k) or f"<missing step {k}>"
            names.add(f"{step['task']}-{name}")
            values.add(f"{step['task']}-{name}-{value}")
    return names, values


def micro_prf(gold: Iterable[set], pred: Iterable[set]) -> dict[str, float]:
    """Micro precision/recall/F1 over per-sample sets (0 when a denominator is 0)."""
    tp = n_pred = n_gold = 0
    for g, p in zip(gold, pred):
        tp += len(g & p)
        n_pred += len(p)
        n_gold += len(g)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _canonical(plan: Any) -> Any:
    if not isinstance(plan, list):
        return plan
    out = []
    for step in plan:
        if isinstance(step, dict) and isinstance(step.get("args"), dict):
            args = {
                n: (f"<GENERATED>-{k}" if (k := parse_reference(v)) is not None else v) for n, v in step["args"].items()
            }
            step = {**step, "args": args}
        out.append(step)
    return out


def evaluate_plans(
    predictions: list[str],
    references: list[list[dict]],
    tasks: dict[str, TaskSpec] = DEFAULT_TASKS,
    available_tasks: Iterable[str] | None = None,
) -> dict[str, Any]:
    """TaskBench-style metrics of model outputs ``predictions`` (free text) against gold plans ``references``.

    Returns a flat dict: ``num_samples``, ``parse_rate``, ``well_formed_rate``, ``valid_rate``, ``executable_rate``,
    ``exact_match``,
    ``node_precision/recall/f1``, ``node_f1_strict``, ``edge_precision/recall/f1``, ``arg_name_*``,
    ``arg_value_*`` (all in [0, 1]) and ``error_codes`` (how often each validation error occurred).
    """
    if len(predictions) != len(references):
        raise ValueError(f"evaluate_plans: {len(predictions)} predictions but {len(references)} references")
    n = len(predictions)
    available = set(tasks) if available_tasks is None else set(available_tasks)
    parsed, well_formed, valid, executable, exact = 0, 0, 0, 0, 0
    error_codes: dict[str, int] = {}
    gold_nodes, pred_nodes, pred_nodes_all = [], [], []
    gold_edges, pred_edges, gold_names, pred_names, gold_values, pred_values = [], [], [], [], [], []
    for text, gold in zip(predictions, references):
        try:
            plan: Any = extract_plan(text)
            parsed += 1
        except PlanParseError:
            plan = []
            error_codes["unparsable"] = error_codes.get("unparsable", 0) + 1
        else:
            errors = validate_plan(plan, tasks)
            codes = {e.code for e in errors}
            for code in codes:
                error_codes[code] = error_codes.get(code, 0) + 1
            well_formed += not (codes & SHAPE_CODES)
            valid += not errors
            executable += not errors and plan_nodes(plan) <= available
            exact += _canonical(plan) == _canonical(gold)
        nodes = plan_nodes(plan)
        gold_nodes.append(plan_nodes(gold) & set(tasks))
        pred_nodes.append(nodes & set(tasks))
        pred_nodes_all.append(nodes)
        gold_edges.append(plan_edges(gold))
        pred_edges.append(plan_edges(plan))
        gn, gv = plan_arguments(gold)
        pn, pv = plan_arguments(plan)
        gold_names.append(gn)
        pred_names.append(pn)
        gold_values.append(gv)
        pred_values.append(pv)
    out: dict[str, Any] = {"num_samples": n}
    rate = (lambda x: x / n) if n else (lambda x: 0.0)
    out.update(
        parse_rate=rate(parsed),
        well_formed_rate=rate(well_formed),
        valid_rate=rate(valid),
        executable_rate=rate(executable),
        exact_match=rate(exact),
    )
    for prefix, g, p in [
        ("node", gold_nodes, pred_nodes),
        ("edge", gold_edges, pred_edges),
        ("arg_name", gold_names, pred_names),
        ("arg_value", gold_values, pred_values),
    ]:
        for key, value in micro_prf(g, p).items():
            out[f"{prefix}_{key}"] = value
    out["node_f1_strict"] = micro_prf(gold_nodes, pred_nodes_all)["f1"]
    out["error_codes"] = dict(sorted(error_codes.items()))
    return out


def load_plan_rows(data: str | Path) -> list[dict]:
    """Tool dialogues (LLaVA rows whose last ``gpt`` turn is a plan) from a JSON list / JSONL file, or from a
    ShapeWorld data folder (``eval/stage3_tools.json``, else ``stage3_tools.json``)."""
    path = Path(data)
    if path.is_dir():
        for candidate in (path / "eval" / "stage3_tools.json", path / "stage3_tools.json"):
            if candidate.is_file():
                path = candidate
                break
        else:
            raise FileNotFoundError(f"{data}: no eval/stage3_tools.json or stage3_tools.json (tool dialogues) here")
    text = path.read_text(encoding="utf-8")
    rows = (
        json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]
    )
    return rows


def _row_parts(row: dict, index: int) -> tuple[str | None, str, list[dict]]:
    """``(system prompt, request, gold plan)`` of one tool dialogue; ValueError naming the row when malformed."""
    turns = row.get("conversations") if isinstance(row, dict) else None
    if not isinstance(turns, list) or len(turns) < 2:
        raise ValueError(f"row {index}: expected `conversations` with a human and a gpt turn")
    system = next((t["value"] for t in turns if t.get("from") == "system"), None)
    humans = [t["value"] for t in turns if t.get("from") in ("human", "user")]
    answers = [t["value"] for t in turns if t.get("from") in ("gpt", "assistant")]
    if not humans or not answers:
        raise ValueError(f"row {index} (id {row.get('id')}): needs a human turn and a gpt turn")
    gold = row.get("plan")
    if gold is None:
        try:
            gold = extract_plan(answers[-1])
        except PlanParseError as e:
            raise ValueError(f"row {index} (id {row.get('id')}): the gpt turn holds no plan: {e}") from e
    return system, humans[-1], gold


def evaluate_plan_model(
    model: Any,
    processor: Any,
    data: str | Path,
    output_dir: str | Path | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    max_new_tokens: int = 256,
    progress: bool = False,
    tasks: dict[str, TaskSpec] = DEFAULT_TASKS,
) -> dict[str, Any]:
    """Generate a plan for every held-out tool request in ``data`` and score it with :func:`evaluate_plans`.

    The prompt is the row's system turn (the tool list) + its request, text-only, greedy — as in stage-3 training.
    Malformed rows are skipped and counted (``skipped_rows``). With ``output_dir``, every prediction is written to
    ``predictions_plans.jsonl`` (id, request, prediction, gold, parse/validation errors).
    """
    rows = load_plan_rows(data)[: limit if limit is not None else None]
    items, skipped = [], []
    for i, row in enumerate(rows):
        try:
            items.append((row.get("id", str(i)), *_row_parts(row, i)))
        except ValueError as e:
            skipped.append(str(e))
    predictions: list[str] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        predictions += generate_texts(
            model, processor, [b[2] for b in batch], systems=[b[1] for b in batch], max_new_tokens=max_new_tokens
        )
        if progress:
            print(f"plans: {len(predictions)}/{len(items)}", file=sys.stderr)
    golds = [b[3] for b in items]
    metrics = evaluate_plans(predictions, golds, tasks)
    metrics["skipped_rows"] = len(skipped)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "predictions_plans.jsonl", "w", encoding="utf-8") as f:
            for (rid, _, request, gold), pred in zip(items, predictions):
                try:
                    errors = [str(e) for e in validate_plan(extract_plan(pred), tasks)]
                except PlanParseError as e:
                    errors = [str(e)]
                record = {"id": rid, "request": request, "prediction": pred, "gold": gold, "errors": errors}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return metrics


__all__ = [
    "evaluate_plan_model",
    "evaluate_plans",
    "load_plan_rows",
    "micro_prf",
    "plan_arguments",
    "plan_edges",
    "plan_nodes",
]
