"""Stage-3 data: HuggingGPT/TaskBench → LLaVA conversion (skips counted), ShapeWorld dialogues validate and execute,
and the ShapeWorld text-to-image tool."""

import json
import random

import numpy as np
import pytest

from tool_use.convert import convert_records, main, normalise_task_name, taskbench_to_plan
from tool_use.eval_plans import evaluate_plans
from tool_use.executor import execute_plan
from tool_use.registry import ToolRegistry, shapeworld_tool
from tool_use.schema import extract_plan, tool_system_prompt, validate_plan
from tool_use.shapeworld_render import description_to_scene, render_description

TASKBENCH = {
    "id": "10",
    "user_request": "Describe example.jpg, then read the description aloud.",
    "task_nodes": [
        {"task": "Image-to-Text", "arguments": ["example.jpg"]},
        {"task": "Text-to-Speech", "arguments": ["<node-0>"]},
        {"task": "Visual Question Answering", "arguments": ["example.jpg", "What is in it?"]},
    ],
    "task_links": [{"source": "Image-to-Text", "target": "Text-to-Speech"}],
    "type": "dag",
}
HUGGINGGPT = {
    "user_input": "Translate the caption of a.png",
    "tasks": json.dumps(
        [
            {"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "a.png"}},
            {"task": "translation", "id": 1, "dep": [0], "args": {"text": "<resource>-0"}},
        ]
    ),
}


def test_taskbench_record_to_plan():
    assert taskbench_to_plan(TASKBENCH) == [
        {"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "example.jpg"}},
        {"task": "text-to-speech", "id": 1, "dep": [0], "args": {"text": "<GENERATED>-0"}},
        {
            "task": "visual-question-answering",
            "id": 2,
            "dep": [-1],
            "args": {"image": "example.jpg", "text": "What is in it?"},
        },
    ]
    assert normalise_task_name("Automatic_Speech Recognition") == "automatic-speech-recognition"


def test_convert_counts_and_names_skips():
    bad_task = {"user_request": "x", "task_nodes": [{"task": "Video Generation", "arguments": ["a"]}]}
    bad_arg = {"id": "b", "user_request": "x", "task_nodes": [{"task": "Summarization", "arguments": ["a.png"]}]}
    invalid = {
        "request": "y",
        "plan": [{"task": "translation", "id": 0, "dep": [-1], "args": {"text": "<GENERATED>-3"}}],
    }
    rows, report = convert_records([TASKBENCH, HUGGINGGPT, bad_task, bad_arg, invalid, {"tasks": []}, None])
    assert report.converted == 2 and len(rows) == 2
    assert [(r, reason.split(":")[0]) for r, _, reason in report.skipped] == [
        (2, "unknown task"),
        (3, "unplaceable argument"),
        (4, "invalid plan"),
        (5, "no request"),
        (6, "not an object"),
    ]
    assert report.skipped[1][1] == "b" and "summarization takes {'text': 'text'}" in report.skipped[1][2]
    assert "missing_step" in report.skipped[2][2]
    row = rows[1]
    assert row["id"] == "plan-000001"
    assert [t["from"] for t in row["conversations"]] == ["system", "human", "gpt"]
    assert row["conversations"][0]["value"] == tool_system_prompt()
    assert extract_plan(row["conversations"][2]["value"])[1]["args"] == {"text": "<resource>-0"}


def test_convert_cli(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(TASKBENCH) + "\nnot json\n")
    assert main([str(src), str(tmp_path / "out.json")]) == 0
    assert len(json.loads((tmp_path / "out.json").read_text())) == 1
    assert "converted 1, skipped 1" in capsys.readouterr().out
    broken = tmp_path / "broken.json"
    broken.write_text('[{"user_request": "x",')
    with pytest.raises(ValueError, match="broken.json: not a valid JSON list"):
        main([str(broken), str(tmp_path / "o.json")])


# ------------------------------------------------------------------------------------------ ShapeWorld
def test_description_to_scene_reads_shapeworld_captions():
    from shapeworld import caption, get_difficulty, sample_scene

    for seed in range(50):
        scene = sample_scene(random.Random(seed), get_difficulty("hard"), "x")
        got = description_to_scene(caption(scene))
        key = lambda s: sorted((o["colour"], o["shape"], o["size"], o["row"], o["col"]) for o in s["objects"])  # noqa: E731
        assert key(got) == key(scene), caption(scene)
        assert (got["label"] or {}).get("text") == (scene["label"] or {}).get("text")


def test_shapeworld_tool_draws_the_relation():
    image = render_description("a red circle to the left of a blue square", image_size=60)
    assert image.size == (60, 60)
    assert image.getpixel((10, 30)) == (220, 30, 30)  # left-middle cell: red
    assert image.getpixel((50, 30)) == (30, 70, 230)  # right-middle cell: blue
    with pytest.raises(ValueError, match="nothing to draw"):
        render_description("a cat on a mat")


def test_shapeworld_dialogues_validate_and_execute(tmp_path):
    from PIL import Image

    from shapeworld import get_difficulty
    from shapeworld.tools import AUDIO_FILES, IMAGE_FILES, TEMPLATES, tool_dialogue

    rows = [tool_dialogue(i, 0, get_difficulty("easy")) for i in range(60)]
    assert {r["template"] for r in rows} >= set(list(TEMPLATES)[:5])
    for r in rows:
        assert validate_plan(r["plan"]) == [], r
    gold = [r["plan"] for r in rows]
    assert evaluate_plans([r["conversations"][-1]["value"] for r in rows], gold)["exact_match"] == 1.0

    # every template runs on stand-in tools + the real ShapeWorld renderer
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in IMAGE_FILES:
        Image.new("RGB", (16, 16)).save(inputs / name)
    from tool_use.media import save_audio

    for name in AUDIO_FILES:
        save_audio({"array": np.zeros(80, np.float32), "sampling_rate": 8000}, inputs / name)
    reg = ToolRegistry([shapeworld_tool()])
    for task in ("image-to-text", "image-classification", "object-detection"):
        reg.register(task, lambda image: f"{image.size[0]}px")
    reg.register("visual-question-answering", lambda image, text: "yes")
    reg.register("image-text-to-text", lambda image, text: "a detailed description")
    reg.register("automatic-speech-recognition", lambda audio: "a green triangle above a red circle")
    reg.register("text-to-speech", lambda text: {"array": np.zeros(10, np.float32), "sampling_rate": 8000})
    reg.register("translation", lambda text: text[::-1])
    reg.register("summarization", lambda text: text[:5])
    seen = set()
    for r in rows:
        if r["template"] in seen:
            continue
        seen.add(r["template"])
        result = execute_plan(r["plan"], reg, input_dir=inputs, output_dir=tmp_path / r["template"])
        assert result.status == "ok", (r["template"], result.summary())
    drawn = [p for p in tmp_path.glob("*/step*_text-to-image.png")]
    assert drawn and Image.open(drawn[0]).size == (336, 336)
