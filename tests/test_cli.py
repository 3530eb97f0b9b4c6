"""The `mage` console script: sub-command help and the demo end to end (shortened)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from mage_cli.main import SUBCOMMANDS, build_parser, main


def test_every_subcommand_is_listed_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2


def test_demo_help_is_useful():
    help_text = build_parser()._subparsers._group_actions[0].choices["demo"].format_help()
    assert "--output-dir" in help_text and "--seed" in help_text


def test_demo_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    from mage_cli.main import main

    (tmp_path / "mine.txt").write_text("not the demo's")
    assert main(["demo", "--quick", "--output-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "was not made by `mage demo`" in error[0] and "--overwrite" in error[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


@pytest.mark.slow
def test_mage_demo_quick_runs_end_to_end(tmp_path):
    """The shortened demo runs every step: data, stage 0-3 through `mage train`'s code path, evaluation of five
    models, report, publishable folder, fresh-process reload and one agent request (quality is not asserted here:
    the full demo asserts it; `--quick` trains for seconds)."""
    import json

    mage = shutil.which("mage", path=str(__import__("pathlib").Path(sys.executable).parent)) or shutil.which("mage")
    command = [mage] if mage else [sys.executable, "-m", "mage_cli.main"]
    out = tmp_path / "demo"
    completed = subprocess.run(
        command + ["demo", "--quick", "--output-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    # stage 0's text-only LM trains no projector on purpose; the user is not told to "run stage 1 first"
    assert "projector was not trained in stage 1" not in completed.stderr
    report = json.loads((out / "demo_report.json").read_text())
    from mage_cli.demo_stages import DemoSettings

    settings = DemoSettings.preset("tiny", quick=True)  # stage 3 as the full demo runs it: replay and ITG's weighting
    stage3_recipe = json.loads((out / "models" / "stage3" / "training_report.json").read_text())["recipe"]
    assert stage3_recipe["itg_reduction"] == settings.stage3_itg_reduction
    assert stage3_recipe["replay_ratio"] == settings.stage3_replay_ratio
    for stage, weight in (("stage1", settings.stage1_sea_weight), ("stage2", settings.stage2_sea_weight)):
        recipe = json.loads((out / "models" / stage / "training_report.json").read_text())["recipe"]
        assert (recipe["alignment_objective"], recipe["sea_weight"]) == ("sea", weight)
    assert set(report["rows"]) == {"untrained", "stage 1", "stage 2", "stage 3", "text-only baseline"}
    assert "plan valid %" in report["rows"]["stage 3"]
    for stage in ("stage1", "stage2", "stage3"):
        training = json.loads((out / "models" / stage / "training_report.json").read_text())
        assert "itg_loss" in training["last_log"] and "itdm_loss" in training["last_log"]
    assert (out / "final" / "README.md").is_file() and (out / "final" / "model.safetensors").is_file()
    assert (out / "demo_report.md").is_file() and (out / "demo_report.png").is_file()
    assert "[9/9] mage agent" in completed.stdout and "transformers_modules." in completed.stdout
    # a second demo into its own folder replaces the first one's stages (no --overwrite needed)
    again = subprocess.run(
        command + ["demo", "--quick", "--no-reload", "--output-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]


def test_demo_verdict_is_not_fooled_by_constant_yes_no_answers():
    """A stage 3 that says "yes" to everything (POPE F1 66.7, accuracy 50) against a baseline that says "no" (F1 0,
    accuracy 50) has learned nothing: the verdict must not pass it; a real gain on the same splits must pass."""
    from evaluation.demo_report import judge

    constant = {"MMB": 0.0, "SEED": 25.0}
    rows = {
        "untrained": {"POPE acc": 50.0, "POPE F1": 66.7, **constant},
        "stage 3": {"POPE acc": 50.0, "POPE F1": 66.7, **constant},
        "text-only baseline": {"POPE acc": 50.0, "POPE F1": 0.0, **constant},
    }
    assert not judge(rows)["trained_beats_baselines"]
    rows["stage 3"] = {"POPE acc": 80.0, "POPE F1": 78.0, "MMB": 10.0, "SEED": 40.0}
    verdict = judge(rows)
    assert verdict["trained_beats_baselines"] and verdict["trained"] == pytest.approx(130 / 3)


def test_stage0_text_holds_each_conversation_plain_and_with_its_caption_in_context(tmp_path):
    import json

    from mage_cli.demo_stages import text_only_rows
    from shapeworld import dataset_paths, generate_dataset, get_difficulty

    n = 12
    rows = text_only_rows(n, seed=0, difficulty=get_difficulty("easy"))
    assert len(rows) == 3 * n  # caption, conversation, conversation with its caption in context
    assert all("<image>" not in turn["value"] for row in rows for turn in row["conversations"])
    by_id = {row["id"]: row for row in rows}
    for i in range(n):
        caption = by_id[f"text-caption-{i:06d}"]["conversations"][1]["value"]
        plain = by_id[f"text-instruct-{i:06d}"]["conversations"]
        in_context = by_id[f"context-{i:06d}"]["conversations"]
        assert in_context[0]["value"] == f"In the picture: {caption}.\n{plain[0]['value']}"
        assert in_context[1:] == plain[1:]
    # its own scenes: not the captions the training split of the same seed holds (the rows stage 1 is trained on)
    generate_dataset(str(tmp_path), n, 2, seed=0, image_size=48, difficulty="easy", benchmarks=())
    stage1 = json.loads(open(dataset_paths(str(tmp_path))["stage1"]).read())
    train_captions = [row["conversations"][1]["value"] for row in stage1]
    assert [by_id[f"text-caption-{i:06d}"]["conversations"][1]["value"] for i in range(n)] != train_captions


def test_stage0_text_can_ask_several_questions_per_caption_and_none_without_one():
    from mage_cli.demo_stages import text_only_rows
    from shapeworld import get_difficulty

    n = 30
    rows = text_only_rows(n, seed=0, difficulty=get_difficulty("easy"), context_turns=4, blind=False)
    assert len(rows) == 2 * n and not any(row["id"].startswith("text-instruct") for row in rows)
    in_context = [row["conversations"] for row in rows if row["id"].startswith("context-")]
    questions = [len(turns) // 2 for turns in in_context]
    assert max(questions) > 1 and max(questions) <= 4
    assert all(turns[0]["value"].startswith("In the picture: ") for turns in in_context)
    assert all("In the picture" not in t["value"] for turns in in_context for t in turns[1:])


def test_stage0_tool_rows_are_plans_of_their_own_stream_without_the_tool_list(tmp_path):
    import json

    from mage_cli.demo_stages import text_only_rows
    from shapeworld import dataset_paths, generate_dataset, get_difficulty
    from tool_use.schema import validate_plan

    rows = text_only_rows(4, seed=0, difficulty=get_difficulty("easy"), tools=6)
    plans = [row for row in rows if row["id"].startswith("tools-stage0-")]
    assert len(rows) == 3 * 4 + 6 and len(plans) == 6
    for row in plans:
        assert [turn["from"] for turn in row["conversations"]] == ["human", "gpt"]  # no system prompt
        assert validate_plan(json.loads(row["conversations"][1]["value"])) == []
    # not the dialogues stage 3 trains on
    generate_dataset(str(tmp_path), 6, 2, seed=0, image_size=48, difficulty="easy", benchmarks=())
    stage3 = json.loads(open(dataset_paths(str(tmp_path))["stage3"]).read())
    requests = {row["conversations"][1]["value"] for row in stage3}
    assert not requests & {row["conversations"][0]["value"] for row in plans}


def test_demo_set_overrides_typed_fields_and_refuses_bad_ones(tmp_path, capsys):
    from mage_cli.demo_stages import DemoSettings

    settings = DemoSettings().with_overrides(["stage2_steps=800", "itdm_weight=0", "question_types=existence,colour"])
    assert (settings.stage2_steps, settings.itdm_weight) == (800, 0.0)
    assert settings.question_types == ("existence", "colour")
    for pair, message in [
        ("stage2_steps=many", "stage2_steps expects a int"),
        ("nope=1", "expected KEY=VALUE with KEY one of"),
        ("eval_limits=3", "cannot be set from the command line"),
        ("question_types=existence,bogus", "question_types must be a non-empty subset"),
    ]:
        assert main(["demo", "--quick", "--output-dir", str(tmp_path / "out"), "--set", pair]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and message in error[0], error
    assert not (tmp_path / "out").exists()  # refused before anything is written
