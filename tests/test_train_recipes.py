"""Every bundled recipe validates; overrides are typed; unknown keys are named with a suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from training.recipes import RECIPE_DIR, Recipe, RecipeError, load_recipe, recipe_from_dict

ACCELERATE_DIR = Path(__file__).resolve().parents[1] / "training" / "accelerate_configs"
RECIPES = sorted(RECIPE_DIR.glob("*.yaml"))


def test_the_expected_recipes_exist():
    names = {path.stem for path in RECIPES}
    for stage in (1, 2, 3):
        for size in ("7b", "13b", "tiny"):
            assert f"stage{stage}_{size}" in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_validates(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe.stage == int(path.stem[5])
    assert recipe.template == ("plain" if recipe.stage == 1 else "vicuna_v1")


@pytest.mark.parametrize("size", ["7b", "13b"])
def test_llava_15_hyper_parameters(size):
    """LLaVA-1.5 (docs/training.md, Recipes): stage 1 lr 1e-3 bs 256, stage 2 lr 2e-5 bs 128, 1 epoch, warmup 3 %,
    cosine, 2048, bf16 (8 GPUs)."""
    for stage, lr, batch in ((1, 1e-3, 256), (2, 2e-5, 128)):
        recipe = load_recipe(f"stage{stage}_{size}")
        assert recipe.learning_rate == lr
        assert recipe.per_device_train_batch_size * recipe.gradient_accumulation_steps * 8 == batch
        assert (recipe.num_train_epochs, recipe.warmup_ratio, recipe.lr_scheduler_type) == (1.0, 0.03, "cosine")
        assert recipe.max_length == 2048 and recipe.bf16
    assert load_recipe(f"stage3_{size}").replay_ratio == 0.1


def test_overrides_are_typed():
    recipe = load_recipe("stage2_tiny", ["learning_rate=1e-3", "bf16=true", "max_samples=12", "projector_lr=none"])
    assert recipe.learning_rate == 1e-3 and recipe.bf16 is True and recipe.max_samples == 12
    assert recipe.projector_lr is None


def test_unknown_override_suggests_the_field():
    with pytest.raises(RecipeError, match="`lr` is not a recipe field; did you mean `learning_rate`"):
        load_recipe("stage2_tiny", ["lr=1e-3"])
    with pytest.raises(RecipeError, match="did you mean `per_device_train_batch_size`"):
        load_recipe("stage2_tiny", ["per_device_batch_size=4"])


def test_all_errors_reported_at_once_with_file_name(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stage: 4\ntemplate: chatml\nlearning_rate: fast\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message and "learning_rate='fast'" in message
    with pytest.raises(RecipeError, match="stage=4.*template='chatml'"):
        recipe_from_dict({"stage": 4, "template": "chatml"})


def test_itg_reduction_is_a_checked_recipe_field():
    assert load_recipe("stage3_tiny", ["itg_reduction=sample"]).itg_reduction == "sample"
    with pytest.raises(RecipeError, match="itg_reduction='mean': expected 'token', 'square' or 'sample'"):
        load_recipe("stage3_tiny", ["itg_reduction=mean"])


def test_missing_recipe_lists_bundled_ones():
    with pytest.raises(RecipeError, match="stage2_7b"):
        load_recipe("stage9_huge")


def test_bad_set_syntax():
    with pytest.raises(RecipeError, match="expected key=value"):
        load_recipe("stage2_tiny", ["learning_rate"])


@pytest.mark.parametrize("path", sorted(ACCELERATE_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_accelerate_configs_parse(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(path)
    raw = yaml.safe_load(path.read_text())
    assert config.distributed_type == raw["distributed_type"]
    if raw["distributed_type"] == "FSDP":
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
        assert config.fsdp_config["fsdp_use_orig_params"] is True  # frozen tower alongside trained parts
    if raw["distributed_type"] == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] in (2, 3)
