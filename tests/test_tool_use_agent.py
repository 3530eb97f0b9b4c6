"""`mage agent` end to end with a tiny random MAGE checkpoint: load, plan generation, validation, execution with
MAGE itself and the ShapeWorld renderer as tools, artefacts and manifest; and the plans benchmark runner."""

import json

import pytest
from PIL import Image

from mage_cli.main import main as mage_main
from tool_use.schema import plan_to_text, tool_system_prompt

PLAN = [
    {"task": "text-to-image", "id": 0, "dep": [-1], "args": {"text": "a red circle to the left of a blue square"}},
    {"task": "image-to-text", "id": 1, "dep": [0], "args": {"image": "<GENERATED>-0"}},
    {"task": "visual-question-answering", "id": 2, "dep": [-1], "args": {"image": "photo.png", "text": "What colour?"}},
    {"task": "text-to-speech", "id": 3, "dep": [1], "args": {"text": "<GENERATED>-1"}},
]
REQUEST = (
    "Draw a red circle to the left of a blue square, describe it, read it aloud, and say what colour photo.png is."
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from mage_testing.tiny import build_tiny_mage

    path = tmp_path_factory.mktemp("tiny_mage")
    model, processor = build_tiny_mage([tool_system_prompt(), REQUEST, plan_to_text(PLAN)], vocab_size=600)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_agent_untrained_model_reports_no_plan(tmp_path, checkpoint, capsys):
    out = tmp_path / "out"
    code = mage_main(["agent", "--model", str(checkpoint), "--output-dir", str(out), "--max-new-tokens", "8", REQUEST])
    captured = capsys.readouterr()
    assert captured.out.startswith("model output: ")
    assert code == 2  # the seeded random model writes no JSON list in 8 tokens
    assert "no plan:" in captured.err
    assert json.loads((out / "manifest.json").read_text())["status"] == "unparsable"


def test_agent_end_to_end(tmp_path, checkpoint, capsys, monkeypatch):
    """The planner's generation is replaced by a fixed answer (a random tiny model cannot plan); everything else —
    checkpoint loading, validation, ShapeWorld drawing, MAGE answering about the drawn and the user image, the
    missing text-to-speech tool, artefacts, manifest, summary — runs for real."""
    import inference.generation

    real = inference.generation.generate_text
    seen = {}

    def planner(model, processor, question, *, image=None, system=None, max_new_tokens=128):
        if system is not None:  # the planning call: system prompt + request
            seen["system"], seen["question"] = system, question
            return "Here is my plan:\n```json\n" + plan_to_text(PLAN) + "\n```"
        return real(model, processor, question, image=image, max_new_tokens=4)

    monkeypatch.setattr(inference.generation, "generate_text", planner)
    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    out = tmp_path / "out"
    code = mage_main(["agent", "--model", str(checkpoint), "--image", str(image), "--output-dir", str(out), REQUEST])
    printed = capsys.readouterr().out
    assert seen == {"system": tool_system_prompt(), "question": REQUEST}
    assert code == 1, printed  # text-to-speech is not configured by default
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["status"] for s in manifest["steps"]] == ["ok", "ok", "ok", "failed"]
    assert "no tool configured for 'text-to-speech'" in manifest["steps"][3]["error"]
    drawn = Image.open(out / "step0_text-to-image.png")
    assert drawn.getpixel((40, 168)) == (220, 30, 30) and drawn.getpixel((296, 168)) == (30, 70, 230)
    assert isinstance(manifest["steps"][1]["output_text"], str) and (out / "step1_image-to-text.txt").is_file()
    assert (out / "inputs" / "photo.png").is_file()
    assert "step 0 text-to-image: ok" in printed and "step 3 text-to-speech: failed" in printed


def test_agent_plan_only_and_bad_model(tmp_path, checkpoint, capsys, monkeypatch):
    import inference.generation

    bad = [dict(PLAN[0]), {"task": "paint", "id": 1, "dep": [0], "args": {"image": "<GENERATED>-0"}}]
    monkeypatch.setattr(inference.generation, "generate_text", lambda *a, **k: plan_to_text(bad))
    code = mage_main(["agent", "--model", str(checkpoint), "--plan-only", "--output-dir", str(tmp_path), REQUEST])
    assert code == 2 and "invalid plan: step 1: [unknown_task]" in capsys.readouterr().out
    assert mage_main(["agent", "--model", str(tmp_path / "nope"), REQUEST]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


def test_plans_benchmark_runner(tmp_path, checkpoint):
    from tool_use.eval_plans import evaluate_plan_model
    from tool_use.registry import load_mage

    rows = [
        {
            "id": f"r{i}",
            "conversations": [
                {"from": "system", "value": tool_system_prompt()},
                {"from": "human", "value": REQUEST},
                {"from": "gpt", "value": plan_to_text(PLAN)},
            ],
        }
        for i in range(3)
    ]
    rows.append({"id": "broken", "conversations": [{"from": "human", "value": "x"}]})
    data = tmp_path / "eval" / "stage3_tools.json"
    data.parent.mkdir()
    data.write_text(json.dumps(rows))
    model, processor = load_mage(checkpoint)
    m = evaluate_plan_model(model, processor, tmp_path, output_dir=tmp_path / "res", batch_size=2, max_new_tokens=6)
    assert m["num_samples"] == 3 and m["skipped_rows"] == 1
    assert 0.0 <= m["node_f1"] <= 1.0 and m["parse_rate"] <= 1.0
    lines = (tmp_path / "res" / "predictions_plans.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["gold"] == PLAN


def test_yaml_config_with_mage_and_shapeworld(tmp_path, checkpoint):
    from tool_use.registry import registry_from_config

    cfg = tmp_path / "tools.yaml"
    cfg.write_text(f"mage: {checkpoint}\nmage_max_new_tokens: 3\nshapeworld: true\n")
    reg = registry_from_config(cfg)
    assert sorted(reg.tasks) == ["image-text-to-text", "image-to-text", "text-to-image", "visual-question-answering"]
    image = reg.run("text-to-image", text="a green star")
    assert isinstance(reg.run("visual-question-answering", image=image, text="What colour?"), str)


def test_mage_served_by_the_transformers_image_text_to_text_pipeline(checkpoint):
    import modeling_mage  # noqa: F401  (registers the Auto classes in-process)
    from tool_use.registry import pick_pipeline_task, pipeline_tool

    image = Image.new("RGB", (64, 64), (30, 170, 40))
    vqa = pipeline_tool("visual-question-answering", str(checkpoint), generate_kwargs={"max_new_tokens": 3})
    caption = pipeline_tool("image-to-text", str(checkpoint), generate_kwargs={"max_new_tokens": 3})
    assert isinstance(vqa(image=image, text="What colour?"), str)
    assert isinstance(caption(image=image), str)
    assert pick_pipeline_task("visual-question-answering") in ("visual-question-answering", "image-text-to-text")
