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
* **parse / valid / executable rate** — share of predictions from which a JSON plan could be extracted; whose plan
  has the right *shape* (a non-empty list of steps with task/id/dep/args of the right types and ids 0..n-1);
  and which :func:`~tool_use.schema.validate_plan` accepts in full (known tools, arguments, modalities, acyclic
  dependencies that agree with the references), i.e. the executor would run it.

One deliberate difference: TaskBench drops predictions it cannot parse from the support; here they count as empty
plans (every gold node, edge and argument a false negative), which is stricter and keeps the support equal to the
number of samples. Exact-match rate (predicted plan == gold plan after canonicalising references) is reported too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .schema import DEFAULT_TASKS, PlanParseError, TaskSpec, extract_plan, parse_reference, validate_plan

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
        if not isinstance(step, dict) or not isinstance(step.get("task"), str) or not isinstance(step.get("args"), dict):
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
            args = {n: (f"<GENERATED>-{k}" if (k := parse_reference(v)) is not None else v) for n, v in step["args"].items()}
            step = {**step, "args": args}
        out.append(step)
    return out


def evaluate_plans(
    predictions: list[str],
    references: list[list[dict]],
    tasks: dict[str, TaskSpec] = DEFAULT_TASKS,
) -> dict[str, Any]:
    """TaskBench-style metrics of model outputs ``predictions`` (free text) against gold plans ``references``.

    Returns a flat dict: ``num_samples``, ``parse_rate``, ``valid_rate``, ``executable_rate``, ``exact_match``,
    ``node_precision/recall/f1``, ``node_f1_strict``, ``edge_precision/recall/f1``, ``arg_name_*``,
    ``arg_value_*`` (all in [0, 1]) and ``error_codes`` (how often each validation error occurred).
    """
    if len(predictions) != len(references):
        raise ValueError(f"evaluate_plans: {len(predictions)} predictions but {len(references)} references")
    n = len(predictions)
    parsed, valid, executable, exact = 0, 0, 0, 0
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
            valid += not (codes & SHAPE_CODES)
            executable += not errors
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
    out.update(parse_rate=rate(parsed), valid_rate=rate(valid), executable_rate=rate(executable), exact_match=rate(exact))
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


__all__ = ["evaluate_plans", "micro_prf", "plan_arguments", "plan_edges", "plan_nodes"]
