"""`mage push`: pre-flight refuses broken folders, the card round-trips, the upload calls are right (no network)."""

from __future__ import annotations

import json
import shutil

import pytest
from huggingface_hub import ModelCard

from mage_cli.model_card import build_model_card
from mage_cli.push import PushError, check_folder, file_plan, push


class RecordingApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))


@pytest.fixture()
def checkpoint(tiny_mage_dir, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_mage_dir, folder)
    return folder


RESULTS = {"benchmarks": {"mme": {"metrics": {"perception": 812.5, "cognition": 210.0}}, "pope": {"f1": 0.81}}}


def test_card_metadata_round_trip(checkpoint, tmp_path):
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(RESULTS))
    card = build_model_card(
        checkpoint, results=RESULTS, repo_id="me/mage-tiny", base_models=["openai/clip"], datasets=["shapeworld"]
    )
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "image-text-to-text"
    assert data["base_model"] == ["openai/clip"] and data["license"] == "apache-2.0"
    metrics = {m["type"]: m["value"] for entry in data["model-index"][0]["results"] for m in entry["metrics"]}
    assert metrics == {"perception": 812.5, "cognition": 210.0, "f1": 0.81}
    assert "AutoModelForVision2Seq" in loaded.text and "AutoModelForImageTextToText" in loaded.text


@pytest.mark.slow
def test_dry_run_prints_plan_and_uploads_nothing(checkpoint, capsys):
    api = RecordingApi()
    plan = push(checkpoint, "me/mage-tiny", dry_run=True, api=api)
    assert api.calls == []
    assert {item["path"] for item in plan} >= {"config.json", "model.safetensors", "README.md", "modeling_mage.py"}
    out = capsys.readouterr().out
    assert "pre-flight: loads with AutoModelForImageTextToText" in out and "dry run" in out


def test_upload_creates_repo_then_uploads_the_folder(checkpoint):
    api = RecordingApi()
    push(checkpoint, "me/mage-tiny", private=True, revision="v1", api=api, skip_preflight=True)
    assert [call[0] for call in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][2]["private"] is True
    assert api.calls[2][2]["folder_path"] == str(checkpoint) and api.calls[2][2]["revision"] == "v1"


@pytest.mark.slow
def test_a_folder_that_does_not_load_is_refused(checkpoint):
    (checkpoint / "modeling_mage.py").write_text("raise ImportError('broken remote code')\n")
    api = RecordingApi()
    with pytest.raises(PushError, match="did not load in a fresh process"):
        push(checkpoint, "me/mage-tiny", api=api)
    assert api.calls == []


def test_incomplete_or_unsafe_folders_are_named(checkpoint, tmp_path):
    (checkpoint / "ian.py").unlink()
    with pytest.raises(ValueError, match="missing ian.py"):
        check_folder(checkpoint)
    other = tmp_path / "other"
    shutil.copytree(checkpoint, other)
    (other / "ian.py").write_text("")
    (other / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="pickle-based weight files"):
        check_folder(other)


def test_file_plan_hashes_are_stable(checkpoint):
    assert file_plan(checkpoint) == file_plan(checkpoint)
