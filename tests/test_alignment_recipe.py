"""SEA through the normal training path: recipe fields, `training.api.train` / `mage train` building the
`AlignedMageTrainer` through the objective alignment.recipe registers, and the two label sources (ShapeWorld scenes =
the exact substitute, a real CLIPModel folder)."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from alignment.recipe import ClipRowLabels, ShapeWorldRowLabels, read_scenes  # importing it registers "sea"
from alignment.sea import SEALabelCollator
from inference.threads import torch_threads
from training.objectives import AlignedMageTrainer
from training.recipes import RecipeError, load_recipe


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def shapeworld(tmp_path_factory):
    """A few ShapeWorld training rows (64 px) with their scenes.jsonl."""
    from shapeworld.dataset import generate_dataset

    folder = tmp_path_factory.mktemp("shapeworld")
    generate_dataset(str(folder), 8, 0, seed=0, image_size=64, difficulty="easy", n_tools_train=0, n_tools_eval=0,
                     benchmarks=())  # fmt: skip
    return folder / "train" / "stage1_captions.json"


def _tiny_model(folder, projector_type="ian", q=4):
    from mage_testing.tiny import build_tiny_mage
    from shapeworld.world import COLOURS, SHAPES

    texts = [" ".join([*COLOURS, *SHAPES, "background", "a an the on of"])]
    model, processor = build_tiny_mage(texts, projector_type=projector_type, num_query_tokens=q)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _recipe(**overrides):
    values = {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1, "save_steps": 10**9,
              "alignment_objective": "sea", "sea_window": 1}  # fmt: skip
    values.update(overrides)
    return load_recipe("stage1_tiny", values)


def _spy_trainer(monkeypatch):
    seen = []
    original = AlignedMageTrainer.train

    def train(self, *args, **kwargs):
        seen.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AlignedMageTrainer, "train", train)
    return seen


# ------------------------------------------------------------------------------------------------ validation
def test_recipe_validates_the_alignment_fields():
    recipe = _recipe()
    assert recipe.alignment_objective == "sea" and recipe.sea_weight == 1.0 and recipe.itdm_weight == 1.0
    assert load_recipe("stage2_tiny").alignment_objective == "none"
    assert load_recipe("stage2_tiny", {"alignment_objective": "sea"}).alignment_objective == "sea"
    with pytest.raises(RecipeError, match=r"alignment_objective='sea' with stage=3.*stage=1 or 2"):
        load_recipe("stage3_tiny", {"alignment_objective": "sea"})
    with pytest.raises(RecipeError, match=r"alignment_objective='clip': expected one of \['none', 'sea'\]"):
        _recipe(alignment_objective="clip")
    with pytest.raises(RecipeError) as error:
        _recipe(sea_temperature=0, sea_window=0, sea_apply_to="ian", sea_label_source="oracle", sea_weight=-1)
    for field in ("sea_temperature", "sea_window", "sea_apply_to", "sea_label_source", "sea_weight"):
        assert field in str(error.value)
    with pytest.raises(RecipeError, match=r"sea_clip_model is not set.*sea_word_list is not set"):
        _recipe(sea_label_source="clip")


def test_mage_train_refuses_sea_in_stage_3(capsys, tmp_path):
    from mage_cli.main import main as mage

    argv = ["train", "--recipe", "stage3_tiny", "--model", str(tmp_path), "--data", str(tmp_path / "d.json"),
            "--output-dir", str(tmp_path / "out"), "--set", "alignment_objective=sea"]  # fmt: skip
    assert mage(argv) == 2
    err = capsys.readouterr().err
    assert "alignment_objective='sea'" in err and "stage=3" in err


@pytest.mark.slow
def test_mage_train_with_sea_in_a_fresh_process(shapeworld, tmp_path):
    """`mage train` registers SEA itself (training/ never imports alignment/): nothing imported it before."""
    import subprocess
    import sys
    from pathlib import Path

    model_dir = _tiny_model(tmp_path / "init")
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    argv = ["train", "--recipe", "stage1_tiny", "--model", str(model_dir), "--data", str(shapeworld), "--output-dir",
            str(tmp_path / "out"), "--no-progress", "--set", "alignment_objective=sea", "--set", "sea_window=1",
            "--set", "max_steps=1", "--set", "per_device_train_batch_size=4", "--set", "save_steps=10",
            "--set", "logging_steps=1"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "mage_cli.main", *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert any(line.startswith("SEA  ") for line in done.stdout.splitlines()), done.stdout
    report = json.loads((tmp_path / "out" / "training_report.json").read_text())
    assert report["recipe"]["alignment_objective"] == "sea" and math.isfinite(report["last_log"]["sea_loss"])


# ------------------------------------------------------------------------------------------------ end to end
def test_train_with_sea_on_shapeworld_rows_logs_finite_sea_loss(shapeworld, tmp_path, monkeypatch):
    from training.api import REPORT_FILE, train

    seen = _spy_trainer(monkeypatch)
    model_dir = _tiny_model(tmp_path / "init")
    output = train(_recipe(), model_dir, shapeworld, tmp_path / "out", disable_tqdm=True)
    (trainer,) = seen
    assert type(trainer) is AlignedMageTrainer and set(trainer.objectives) == {"sea"}
    assert isinstance(trainer.data_collator, SEALabelCollator) and trainer.data_collator.missing == 0
    logs = [entry for entry in trainer.state.log_history if "sea_loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        assert math.isfinite(entry["sea_loss"]) and entry["sea_loss"] > 0 and entry["sea_pairs"] >= 2
        assert math.isfinite(entry["itdm_loss"]) and math.isfinite(entry["itg_loss"])  # SEA + ITDM together
    report = json.loads((output / REPORT_FILE).read_text())
    assert report["recipe"]["alignment_objective"] == "sea" and "sea_loss" in report["last_log"]
    assert not any("logit_scale" in key for key in trainer.model.state_dict())  # τ is not exported


def test_shapeworld_row_labels_are_the_exact_scene_labels(shapeworld):
    from alignment.sea import shapeworld_patch_labels, shapeworld_words

    scenes = read_scenes([shapeworld.parent])
    rows = json.loads(shapeworld.read_text())
    images = {row["id"]: str(shapeworld.parent / row["image"]) for row in rows}
    labels = ShapeWorldRowLabels(images, scenes, grid=2, top_n=10, words=shapeworld_words())
    row = rows[3]
    scene = scenes[os.path.normpath(os.path.abspath(shapeworld.parent / row["image"]))]
    ids, scores = labels.get(row["id"])
    expected = shapeworld_patch_labels(scene, 2, shapeworld_words(), image_size=64, top_n=10)
    assert torch.equal(ids, expected[0]) and torch.equal(scores, expected[1])
    assert labels.get("no-such-row") is None


def test_rows_without_scenes_need_the_clip_fields(tmp_path):
    from training.api import train
    from training.fixtures import write_tiny_llava_dataset

    data = write_tiny_llava_dataset(tmp_path / "data", 4, 0, stage=1)
    model_dir = _tiny_model(tmp_path / "init")
    with pytest.raises(RecipeError, match=r"4 of 4 image rows.*set sea_clip_model and sea_word_list"):
        train(_recipe(), model_dir, data, tmp_path / "out")
    with pytest.raises(RecipeError, match=r"set sea_word_list \("):
        train(_recipe(sea_clip_model=str(tmp_path)), model_dir, data, tmp_path / "out")
    with pytest.raises(RecipeError, match="sea_label_source='shapeworld'"):
        train(_recipe(sea_label_source="shapeworld"), model_dir, data, tmp_path / "out")


def test_label_grid_and_window_errors_name_the_field(shapeworld, tmp_path):
    from training.api import train

    model_dir = _tiny_model(tmp_path / "init", projector_type="mlp2x_gelu")
    with pytest.raises(RecipeError, match="sea_apply_to='vab' needs projector_type='ian'"):
        train(_recipe(sea_apply_to="vab"), model_dir, shapeworld, tmp_path / "out")
    with pytest.raises(RecipeError, match=r"sea_window=3 must divide the 4×4 SEA label grid"):
        train(_recipe(sea_window=3), model_dir, shapeworld, tmp_path / "out")
    from training.fixtures import write_tiny_llava_dataset

    no_scenes = write_tiny_llava_dataset(tmp_path / "data", 4, 0, stage=1)
    ian_dir = _tiny_model(tmp_path / "ian")  # 4 queries: a 2×2 grid, one window of 2×2
    with pytest.warns(UserWarning, match=r"sea_window=2 on the 2×2 SEA label grid samples 1 patch"):
        with pytest.raises(RecipeError, match="sea_label_source='shapeworld'"):  # stops before training
            train(_recipe(sea_window=2, sea_label_source="shapeworld"), ian_dir, no_scenes, tmp_path / "out")


def _tiny_clip_folder(folder, words):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from mage_testing.tiny import train_tokenizer

    tokenizer = train_tokenizer([" ".join(words)], vocab_size=300)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": len(tokenizer), "max_position_embeddings": 16, "eos_token_id": tokenizer.eos_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_train_with_clip_labels_from_a_clip_model_folder(tmp_path, monkeypatch):
    from training.api import train
    from training.fixtures import write_tiny_llava_dataset

    words = ["red", "green", "blue", "yellow", "square", "circle", "grey"]
    clip = _tiny_clip_folder(tmp_path / "clip", words)
    (tmp_path / "words.txt").write_text("\n".join(words) + "\n\nred\n")
    data = write_tiny_llava_dataset(tmp_path / "data", 8, 0, stage=1)
    seen = _spy_trainer(monkeypatch)
    recipe = _recipe(sea_clip_model=str(clip), sea_word_list=str(tmp_path / "words.txt"))
    train(recipe, _tiny_model(tmp_path / "init"), data, tmp_path / "out", disable_tqdm=True)
    (trainer,) = seen
    labels = trainer.data_collator.labels
    assert isinstance(labels, ClipRowLabels) and labels.labeller.words == words  # blank lines and repeats dropped
    ids, scores = labels.get("img0")
    assert ids.shape == scores.shape == (2, 2, 10)  # 7 words padded to top_n = 10 with NO_LABEL
    assert (ids[..., len(words) :] == -1).all()
    logs = [entry for entry in trainer.state.log_history if "sea_loss" in entry]
    assert logs and all(math.isfinite(entry["sea_loss"]) for entry in logs)
