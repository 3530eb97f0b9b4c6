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


@pytest.mark.slow
def test_mage_demo_quick_runs_end_to_end(tmp_path):
    mage = shutil.which("mage") or shutil.which("mage", path=str(__import__("pathlib").Path(sys.executable).parent))
    command = [mage] if mage else [sys.executable, "-m", "mage_cli.main"]
    completed = subprocess.run(
        command + ["demo", "--quick", "--output-dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "answers agree: True" in completed.stdout
    assert (tmp_path / "demo" / "tiny-mage" / "model.safetensors").is_file()
