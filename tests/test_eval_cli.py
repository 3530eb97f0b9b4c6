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
    assert first["settings"]["max_new_tokens"] == 3
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


def test_mage_eval_default_generation_length_is_16(tiny_mage_dir, tmp_path):
    data = fixtures.write_pope(str(tmp_path / "pope"), questions_per_split=1, splits=("random",))
    argv = [
        "eval",
        "--model",
        str(tiny_mage_dir),
        "--benchmark",
        "pope",
        "--data",
        data,
        "--output-dir",
        str(tmp_path / "o"),
        "--no-progress",
        "--no-plots",
    ]
    assert main(argv) == 0
    assert json.load(open(tmp_path / "o" / "results.json", encoding="utf-8"))["settings"]["max_new_tokens"] == 16


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
    plans = tmp_path / "plans.jsonl"
    plans.write_text("{}\n", encoding="utf-8")
    argv = [
        "eval",
        "--model",
        str(tiny_mage_dir),
        "--benchmark",
        "plans",
        "--data",
        str(plans),
        "--output-dir",
        str(tmp_path),
        "--limit",
        "2",
    ]
    assert main(argv) == 0
    assert seen == {"data": str(plans), "limit": 2, "has_model": True, "max_new_tokens": 256}
    assert json.load(open(tmp_path / "results_plans.json", encoding="utf-8")) == {"node_f1": 0.5}


def test_mage_eval_plans_with_the_real_tool_use_package(tmp_path):
    import pytest

    eval_plans = pytest.importorskip("tool_use.eval_plans")
    dataset = pytest.importorskip("shapeworld.dataset")
    if not hasattr(eval_plans, "evaluate_plan_model"):
        pytest.skip("tool_use.eval_plans.evaluate_plan_model is not in this build")
    from mage_testing.tiny import tiny_config, tiny_image_processor, train_tokenizer
    from modeling_mage import MageForConditionalGeneration
    from processing_mage import MageProcessor

    data = tmp_path / "eval" / "stage3_tools.json"
    dataset.write_tool_dialogues(str(data), "eval", 3, seed=0)
    tokenizer = train_tokenizer([data.read_text(encoding="utf-8")], vocab_size=2000)  # tool prompts are long
    config = tiny_config(tokenizer)
    config.text_config.max_position_embeddings = 4096
    tokenizer.model_max_length = 4096
    model_dir = tmp_path / "model"
    MageForConditionalGeneration(config).save_pretrained(model_dir)
    MageProcessor(tiny_image_processor(64), tokenizer, num_image_tokens=config.image_seq_length).save_pretrained(
        model_dir
    )
    argv = [
        "eval",
        "--model",
        str(model_dir),
        "--benchmark",
        "plans",
        "--data",
        str(tmp_path),
        "--output-dir",
        str(tmp_path / "out"),
        "--max-new-tokens",
        "8",
        "--no-progress",
    ]
    assert main(argv) == 0
    result = json.load(open(tmp_path / "out" / "results_plans.json", encoding="utf-8"))
    assert result["num_samples"] == 3 and 0.0 <= result["node_f1"] <= 1.0
