"""Plan metrics against hand-computed values (TaskBench definitions, see tool_use/eval_plans.py)."""

import json

import pytest

from tool_use.eval_plans import evaluate_plans, micro_prf, plan_edges
from tool_use.schema import plan_to_text

GOLD_A = [
    {"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "input.png"}},
    {"task": "translation", "id": 1, "dep": [0], "args": {"text": "<GENERATED>-0"}},
]
PRED_A = [
    {"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "input.png"}},
    {"task": "translation", "id": 1, "dep": [0], "args": {"text": "<resource>-0"}},
]
GOLD_B = [
    {"task": "text-to-image", "id": 0, "dep": [-1], "args": {"text": "a red circle"}},
    {"task": "image-classification", "id": 1, "dep": [0], "args": {"image": "<GENERATED>-0"}},
    {"task": "summarization", "id": 2, "dep": [1], "args": {"text": "<GENERATED>-1"}},
]
PRED_B = [
    {"task": "text-to-image", "id": 0, "dep": [-1], "args": {"text": "a blue circle"}},
    {"task": "object-detection", "id": 1, "dep": [0], "args": {"image": "<GENERATED>-0"}},
    {"task": "paint", "id": 2, "dep": [-1], "args": {"text": "x"}},
]
GOLD_C = [{"task": "summarization", "id": 0, "dep": [-1], "args": {"text": "hello"}}]


def test_hand_computed_metrics():
    predictions = [
        plan_to_text(PRED_A),
        "Plan:\n```json\n" + json.dumps(PRED_B) + "\n```",
        "I don't know.",
    ]
    m = evaluate_plans(predictions, [GOLD_A, GOLD_B, GOLD_C])
    assert m["num_samples"] == 3
    assert m["parse_rate"] == pytest.approx(2 / 3)
    assert m["well_formed_rate"] == pytest.approx(2 / 3)  # PRED_B is well-formed ...
    assert m["valid_rate"] == m["executable_rate"] == pytest.approx(1 / 3)  # ... but names an unknown tool
    assert m["exact_match"] == pytest.approx(1 / 3)  # <resource>-0 == <GENERATED>-0
    # nodes: TP 2+1+0, predicted 2+2 (unknown "paint" ignored, as TaskBench), gold 2+3+1
    assert (m["node_precision"], m["node_recall"]) == (pytest.approx(0.75), pytest.approx(0.5))
    assert m["node_f1"] == pytest.approx(0.6)
    assert m["node_f1_strict"] == pytest.approx(2 * 0.6 * 0.5 / 1.1)  # predicted 5
    # edges: TP 1, predicted 1+1, gold 1+2
    assert m["edge_f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    # argument names: TP 2+1 (text-to-image-text), predicted 2+3, gold 2+3+1
    assert m["arg_name_f1"] == pytest.approx(2 * 0.6 * 0.5 / 1.1)
    # argument name-values: TP 2+0, predicted 5, gold 6
    assert m["arg_value_precision"] == pytest.approx(0.4)
    assert m["arg_value_f1"] == pytest.approx(2 * 0.4 * (1 / 3) / (0.4 + 1 / 3))
    assert m["error_codes"] == {"unknown_task": 1, "unparsable": 1}


def test_perfect_and_empty():
    gold = [GOLD_A, GOLD_B]
    m = evaluate_plans([plan_to_text(g) for g in gold], gold)
    for key in (
        "parse_rate",
        "well_formed_rate",
        "valid_rate",
        "executable_rate",
        "exact_match",
        "node_f1",
        "edge_f1",
        "arg_name_f1",
        "arg_value_f1",
        "node_f1_strict",
    ):
        assert m[key] == 1.0, key
    m = evaluate_plans(["", ""], gold)
    assert m["node_f1"] == 0.0 and m["parse_rate"] == 0.0
    assert evaluate_plans([], [])["num_samples"] == 0
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        evaluate_plans(["", ""], [GOLD_A])


def test_executable_needs_configured_tools():
    gold = [GOLD_A, GOLD_C]
    m = evaluate_plans([plan_to_text(g) for g in gold], gold, available_tasks=["image-to-text", "translation"])
    assert m["valid_rate"] == 1.0 and m["executable_rate"] == 0.5  # no summarization tool


def test_renumbered_steps_keep_values_and_edges():
    # same graph, independent steps in the other order: node/edge/argument F1 are 1, exact match is not
    gold = [
        {"task": "summarization", "id": 0, "dep": [-1], "args": {"text": "a"}},
        {"task": "translation", "id": 1, "dep": [-1], "args": {"text": "b"}},
        {"task": "text-to-speech", "id": 2, "dep": [1], "args": {"text": "<GENERATED>-1"}},
    ]
    pred = [gold[1] | {"id": 0}, gold[0] | {"id": 1}, gold[2] | {"dep": [0], "args": {"text": "<GENERATED>-0"}}]
    m = evaluate_plans([plan_to_text(pred)], [gold])
    assert m["executable_rate"] == 1.0 and m["exact_match"] == 0.0
    assert m["edge_f1"] == m["arg_value_f1"] == m["node_f1"] == 1.0
    assert plan_edges(pred) == {("translation", "text-to-speech")}


def test_micro_prf_zero_denominators():
    assert micro_prf([set()], [set()]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert micro_prf([{1, 2}], [{2, 3, 4}]) == pytest.approx({"precision": 1 / 3, "recall": 0.5, "f1": 0.4})
