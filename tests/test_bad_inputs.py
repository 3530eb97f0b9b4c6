"""Bad input through the real CLI, in a subprocess: exit code 2, one line `mage <command>: error: …` naming what is
wrong, no traceback, and no file changed outside the output folder (inputs hashed before and after)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation import fixtures
from mage_cli.main import main

REPO = Path(__file__).resolve().parents[1]


def tree_hashes(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under `roots` (missing roots count as empty)."""
    hashes = {}
    for root in roots:
        if root.is_file():
            hashes[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            if path.is_file():
                hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def run_cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mage_cli.main", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def assert_refused(completed: subprocess.CompletedProcess, command: str, *needles: str) -> None:
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    assert len(lines) == 1 and lines[0].startswith(f"mage {command}: error: "), completed.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def pope(tmp_path_factory) -> Path:
    return Path(fixtures.write_pope(str(tmp_path_factory.mktemp("pope")), questions_per_split=1))


@pytest.fixture(scope="module")
def not_mage(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("not_mage")
    untyped, llava = root / "untyped", root / "llava"
    untyped.mkdir()
    llava.mkdir()
    (untyped / "config.json").write_text("{}", encoding="utf-8")
    (llava / "config.json").write_text(json.dumps({"model_type": "llava"}), encoding="utf-8")
    return {"untyped": untyped, "llava": llava}


@pytest.mark.parametrize(
    "case, extra, needles",
    [
        ("missing model", ["--model", "{tmp}/nonexistent"], ["--model", "is not a folder"]),
        ("no model_type", ["--model", "{untyped}"], ["model_type is None", "expected 'mage'"]),
        ("another model type", ["--model", "{llava}"], ["model_type is 'llava'", "mage convert llava-hf"]),
        ("batch size 0", ["--batch-size", "0"], ["--batch-size must be at least 1, got 0"]),
        ("negative limit", ["--limit", "-5"], ["--limit must be at least 1, got -5"]),
        ("missing data", ["--data", "{tmp}/no_data"], ["--data", "does not exist"]),
    ],
)
def test_eval_refuses_bad_arguments(case, extra, needles, tiny_mage_dir, pope, not_mage, tmp_path):
    values = {"tmp": tmp_path, **not_mage}
    options = {"--model": str(tiny_mage_dir), "--data": str(pope), "--output-dir": str(tmp_path / "out")}
    for flag, value in zip(extra[::2], extra[1::2]):
        options[flag] = value.format(**values)
    argv = ["eval", "--benchmark", "pope", "--no-progress", *[x for pair in options.items() for x in pair]]
    before = tree_hashes(tiny_mage_dir, pope)
    assert_refused(run_cli(*argv, cwd=tmp_path), "eval", *needles)
    assert tree_hashes(tiny_mage_dir, pope) == before
    assert not (tmp_path / "out").exists()


def test_eval_into_a_folder_of_another_model_is_refused(tiny_mage_dir, pope, tmp_path):
    from mage_testing.tiny import build_tiny_mage

    other = tmp_path / "other_model"
    model, processor = build_tiny_mage(texts=["a red square"] * 4, seed=3)
    model.save_pretrained(other)
    processor.save_pretrained(other)
    out = tmp_path / "out"
    common = ["--benchmark", "pope", "--data", str(pope), "--output-dir", str(out), "--max-new-tokens", "2"]
    assert main(["eval", "--model", str(tiny_mage_dir), *common, "--no-progress", "--no-plots"]) == 0
    before = tree_hashes(out, pope, other)
    completed = run_cli("eval", "--model", str(other), *common, "--no-progress", cwd=tmp_path)
    assert_refused(completed, "eval", "another model", "--overwrite")
    assert tree_hashes(out, pope, other) == before


def test_push_refuses_bad_folders_and_repo_ids(tiny_mage_dir, tmp_path):
    empty, corrupt = tmp_path / "empty", tmp_path / "corrupt"
    empty.mkdir()
    shutil.copytree(tiny_mage_dir, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not safetensors")
    before = tree_hashes(tiny_mage_dir, empty, corrupt)
    cases = [
        (["--model", str(empty), "--repo-id", "me/tiny"], ["missing config.json"]),
        (["--model", str(tmp_path / "missing"), "--repo-id", "me/tiny"], ["is not a folder"]),
        (["--model", str(corrupt), "--repo-id", "me/tiny"], ["model.safetensors", "not a readable safetensors"]),
        (["--model", str(tiny_mage_dir), "--repo-id", "not a repo id"], ["--repo-id 'not a repo id'"]),
        (["--model", str(tiny_mage_dir), "--repo-id", "no-namespace"], ["expected USER/NAME"]),
    ]
    for argv, needles in cases:
        assert_refused(run_cli("push", "--dry-run", *argv, cwd=tmp_path), "push", *needles)
    assert tree_hashes(tiny_mage_dir, empty, corrupt) == before  # no model card written either


@pytest.mark.slow
def test_convert_refuses_before_loading_anything(tmp_path):
    assert_refused(
        run_cli("convert", "llava-hf", str(tmp_path / "nonexistent"), "--out", str(tmp_path / "o"), cwd=tmp_path),
        "convert",
        "no such folder",
    )
    completed = run_cli(
        "convert",
        "init",
        "--vision",
        "v",
        "--text",
        "t",
        "--out",
        str(tmp_path / "o"),
        "--num-query-tokens",
        "10",
        cwd=tmp_path,
    )
    assert_refused(completed, "convert", "--num-query-tokens 10 is not a perfect square")
    assert not (tmp_path / "o").exists()


def test_agent_checks_its_tool_config_before_loading_the_model(tiny_mage_dir, tmp_path):
    bad_yaml, missing_model = tmp_path / "bad.yaml", tmp_path / "missing.yaml"
    bad_yaml.write_text("tools:\n  text-to-speech: {model: [unclosed\n", encoding="utf-8")
    missing_model.write_text("tools:\n  text-to-speech: ./models/no_such_tts\n", encoding="utf-8")
    out = tmp_path / "agent_out"
    for config, needles in ((bad_yaml, ["bad.yaml", "line", "not valid YAML"]), (missing_model, ["no_such_tts"])):
        completed = run_cli(
            "agent",
            "draw a red circle",
            "--model",
            str(tiny_mage_dir),
            "--tools",
            str(config),
            "--output-dir",
            str(out),
            cwd=tmp_path,
        )
        assert_refused(completed, "agent", *needles)
        assert "model output" not in completed.stdout  # refused before the model planned anything
    assert not out.exists()


@pytest.mark.slow
def test_train_refuses_an_output_folder_that_holds_a_model(tiny_mage_dir, tmp_path):
    data = tmp_path / "data.json"
    data.write_text(
        json.dumps(
            [{"id": "0", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}]
        ),
        encoding="utf-8",
    )
    target = tmp_path / "model_copy"
    shutil.copytree(tiny_mage_dir, target)
    before = tree_hashes(target, data)
    completed = run_cli(
        "train",
        "--recipe",
        "stage2_tiny",
        "--model",
        str(target),
        "--data",
        str(data),
        "--output-dir",
        str(target),
        cwd=tmp_path,
    )
    assert_refused(completed, "train", "is not empty", "--overwrite")
    assert tree_hashes(target, data) == before


def test_train_names_a_broken_recipe_file(tiny_mage_dir, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stage: 2\nlearning_rate: [1e-3\n", encoding="utf-8")
    data = tmp_path / "data.json"
    data.write_text("[]", encoding="utf-8")
    completed = run_cli(
        "train",
        "--recipe",
        str(recipe),
        "--model",
        str(tiny_mage_dir),
        "--data",
        str(data),
        "--output-dir",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert_refused(completed, "train", "recipe.yaml: line 3, column 1", "not valid YAML")
    assert not (tmp_path / "out").exists()


def test_a_torn_pope_line_is_named_once(tiny_mage_dir, tmp_path):
    """JSON's own message may end in "at" ("Unterminated string starting at"): the line reads column first."""
    pope = Path(fixtures.write_pope(str(tmp_path / "pope"), questions_per_split=1))
    split = pope / "coco_pope_random.json"
    split.write_text('{"question_id": 1, "image": "x.png", "text": "Is there\n', encoding="utf-8")
    completed = run_cli(
        "eval",
        "--model",
        str(tiny_mage_dir),
        "--benchmark",
        "pope",
        "--data",
        str(pope),
        "--output-dir",
        str(tmp_path / "out"),
        "--no-progress",
        cwd=tmp_path,
    )
    assert_refused(completed, "eval", "coco_pope_random.json:1", "not a JSON object (column ")
    assert "at at" not in completed.stderr
