"""`mage eval` end to end on a saved tiny MAGE: report files, resume, bad layout exit code, `plans` hand-over."""

from __future__ import annotations

import json
import sys
import types

from evaluation import fixtures
from mage_cli.main import main


def test_mage_eval_pope_then_resume(tiny_mage_dir, tmp_path, capsys):
    data = fixtures.write_pope(str(tmp_path / "pope"), questions_per_split=2)
    out = tmp_path / "out"
    argv = [
        "eval",
        "--model",
        str(tiny_mage_dir),
        "--benchmark",
        "pope",
        "--data",
        data,
        "--output-dir",
        str(out),
        "--batch-size",
        "3",
        "--max-new-tokens",
        "3",
        "--no-progress",
    ]
    assert main(argv) == 0
    first = json.load(open(out / "results.json", encoding="utf-8"))
    assert first["model"].endswith(tiny_mage_dir.name) and first["benchmarks"]["pope"]["samples"] == 6
    assert "| this run |" in capsys.readouterr().out
    assert main(argv) == 0
    second = json.load(open(out / "results.json", encoding="utf-8"))
    assert second["benchmarks"]["pope"]["timing"]["resumed"] == 6
    assert second["benchmarks"]["pope"]["scores"] == first["benchmarks"]["pope"]["scores"]


def test_mage_eval_wrong_layout_exits_2(tiny_mage_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = [
        "eval",
        "--model",
        str(tiny_mage_dir),
        "--benchmark",
        "seed",
        "--data",
        str(tmp_path / "empty"),
        "--output-dir",
        str(tmp_path / "o"),
        "--no-progress",
    ]
    assert main(argv) == 2
    assert "SEED-Bench layout" in capsys.readouterr().err


def test_mage_eval_plans_calls_tool_use(tiny_mage_dir, tmp_path, monkeypatch):
    seen = {}

    def evaluate_plan_model(model, processor, data, output_dir=None, batch_size=8, limit=None, max_new_tokens=256):
        seen.update(data=data, limit=limit, has_model=model is not None, max_new_tokens=max_new_tokens)
        return {"node_f1": 0.5}

    package = types.ModuleType("tool_use")
    module = types.ModuleType("tool_use.eval_plans")
    package.eval_plans = module
    module.evaluate_plan_model = evaluate_plan_model
    monkeypatch.setitem(sys.modules, "tool_use", package)
    monkeypatch.setitem(sys.modules, "tool_use.eval_plans", module)
    argv = [
        "eval",
        "--model",
        str(tiny_mage_dir),
        "--benchmark",
        "plans",
        "--data",
        "plans.jsonl",
        "--output-dir",
        str(tmp_path),
        "--limit",
        "2",
    ]
    assert main(argv) == 0
    assert seen == {"data": "plans.jsonl", "limit": 2, "has_model": True, "max_new_tokens": 256}
    assert json.load(open(tmp_path / "results_plans.json", encoding="utf-8")) == {"node_f1": 0.5}
