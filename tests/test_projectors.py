"""Every projector in the registry: any square Q, shapes, gradients, save/load, fresh-process remote code; the
SA-Perceiver's hand-computed values (ALIGNMENT_METHODS.md §2.5.4 V1–V4)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mage_testing.tiny import build_tiny_mage
from modeling_mage.configuration_mage import PROJECTOR_TYPES, QUERY_PROJECTOR_TYPES
from modeling_mage.ian import build_projector, get_projector_class
from modeling_mage.projectors import PROJECTOR_REGISTRY, MageProjector, SAPerceiver, compute_tile_grid, split_into_tiles

ALL_TYPES = ["linear", "mlp2x_gelu", "resampler", "c_abstractor", "ian", "sa_perceiver", "vab"]
NEW_TYPES = ["resampler", "c_abstractor", "sa_perceiver"]


def _tiny(projector_type: str, q: int = 4, seed: int = 0, **overrides):
    return build_tiny_mage(projector_type=projector_type, num_query_tokens=q, seed=seed, **overrides)


def test_registry_is_the_single_source_of_projector_types():
    assert set(PROJECTOR_REGISTRY) == set(PROJECTOR_TYPES) == set(ALL_TYPES)
    for name, cls in PROJECTOR_REGISTRY.items():
        assert issubclass(cls, MageProjector), name
        assert cls.projector_type == name
        assert cls.query_based == (name in QUERY_PROJECTOR_TYPES)
    with pytest.raises(ValueError, match="not registered"):
        get_projector_class("q_former")


@pytest.mark.parametrize("projector_type", ALL_TYPES)
@pytest.mark.parametrize("q", [1, 4, 16])
def test_any_square_query_count_gives_the_right_shape(projector_type, q):
    model, processor = _tiny(projector_type, q)
    expected = q if projector_type in QUERY_PROJECTOR_TYPES else model.config.num_patches
    assert model.config.image_seq_length == processor.num_image_tokens == expected
    features = model.get_image_features(torch.randn(3, 3, 64, 64), return_dict=True).pooler_output
    assert features.shape == (3, expected, model.config.text_config.hidden_size)
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("projector_type", ["c_abstractor", "sa_perceiver", "ian"])
def test_non_square_or_too_many_queries_is_a_named_error(projector_type):
    for bad in (5, 25):  # not a square; more than the 16 patches
        with pytest.raises(ValueError, match="num_query_tokens"):
            _tiny(projector_type, bad)


def test_resampler_may_have_more_queries_than_patches():
    model, _ = _tiny("resampler", 25)
    assert model.get_image_features(torch.randn(1, 3, 64, 64), return_dict=True).pooler_output.shape == (1, 25, 128)


@pytest.mark.parametrize("projector_type", ALL_TYPES)
def test_full_forward_and_every_projector_parameter_gets_a_gradient(projector_type, shape_image):
    model, processor = _tiny(projector_type, 4)
    model.train()
    inputs = processor(
        images=[shape_image, shape_image], text=["<image>\nred square", "<image>\na shape"], padding=True
    )
    labels = inputs["input_ids"].clone()
    labels[labels == model.config.image_token_id] = -100
    out = model(**inputs, labels=labels)
    assert out.image_hidden_states.shape == (2, model.config.image_seq_length, 128)
    out.loss.backward()
    for name, param in model.multi_modal_projector.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("projector_type", NEW_TYPES)
def test_save_load_round_trip_in_process(projector_type, tmp_path, shape_image):
    model, processor = _tiny(projector_type, 4, seed=3)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "projectors.py").exists()
    from modeling_mage import MageForConditionalGeneration

    loaded = MageForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.projector_type == projector_type
    inputs = processor(images=[shape_image], text=["<image>\nwhat"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)


def test_extra_projector_hyper_parameters_are_saved_in_config(tmp_path):
    model, _ = _tiny("resampler", 4, resampler_num_layers=3, resampler_pos_emb=True)
    assert len(model.multi_modal_projector.layers) == 3
    assert model.multi_modal_projector.position_embedding is not None
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["resampler_num_layers"] == 3 and config["resampler_pos_emb"] is True


LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch, transformers
    auto_name = sys.argv[1]
    results = {}
    for path in sys.argv[2:]:
        model = getattr(transformers, auto_name).from_pretrained(path, trust_remote_code=True).eval()
        torch.manual_seed(0)
        pixel_values = torch.randn(1, 3, 64, 64)
        input_ids = torch.tensor([[1] + [model.config.image_token_id] * model.config.image_seq_length + [5, 6]])
        with torch.no_grad():
            logits = model(input_ids=input_ids, pixel_values=pixel_values).logits
        results[path] = {"module": type(model).__module__, "logits": logits[0, -1].tolist(),
                         "projector": type(model.model.multi_modal_projector).__name__}
    results["project_imported"] = any(name in sys.modules for name in ("modeling_mage", "processing_mage"))
    print("RESULT" + json.dumps(results))
    """
)


def _pythons():
    yield pytest.param(sys.executable, "AutoModelForImageTextToText", id="this-transformers")
    tf4 = os.environ.get("MAGE_TF4_PYTHON")
    yield pytest.param(
        tf4,
        "AutoModelForVision2Seq",
        id="transformers-4.57",
        marks=pytest.mark.skipif(not tf4, reason="MAGE_TF4_PYTHON (a transformers 4.57 venv) not set"),
    )


@pytest.mark.slow
@pytest.mark.parametrize(("python", "auto_name"), list(_pythons()))
def test_fresh_process_remote_code_loads_every_new_projector(python, auto_name, tmp_path_factory):
    work = tmp_path_factory.mktemp("fresh")
    paths, references = [], {}
    for projector_type in NEW_TYPES:
        model, _ = _tiny(projector_type, 4, seed=1)
        path = str(work / projector_type)
        model.save_pretrained(path)
        torch.manual_seed(0)
        pixel_values = torch.randn(1, 3, 64, 64)
        input_ids = torch.tensor([[1] + [model.config.image_token_id] * model.config.image_seq_length + [5, 6]])
        with torch.no_grad():
            references[path] = model(input_ids=input_ids, pixel_values=pixel_values).logits[0, -1]
        paths.append(path)
    script = work / "load.py"
    script.write_text(LOAD_SCRIPT)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(work / "hf_home"))
    completed = subprocess.run(
        [python, str(script), auto_name, *paths], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT"))
    results = json.loads(line[len("RESULT") :])
    assert not results.pop("project_imported")
    for path in paths:
        assert results[path]["module"].startswith("transformers_modules."), results[path]["module"]
        torch.testing.assert_close(torch.tensor(results[path]["logits"]), references[path], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ SA-Perceiver, hand values
def test_v1_tile_grid():
    assert compute_tile_grid(500, 700, 336) == (672, 1008, 2, 3)
    assert compute_tile_grid(336, 336, 336) == (336, 336, 1, 1)
    image = torch.arange(3 * 5 * 7, dtype=torch.float32).reshape(3, 5, 7)
    tiles = split_into_tiles(image, 4)  # padded to 8×8 → 2×2 tiles, row-major
    assert tiles.shape == (4, 3, 4, 4)
    torch.testing.assert_close(tiles[1, :, :, :3], image[:, :4, 4:7])
    assert tiles[3, :, 1:, :].abs().sum() == 0  # rows 5..7 are padding
    with pytest.raises(ValueError, match="positive"):
        compute_tile_grid(0, 10, 4)


def _ones_perceiver(hidden: int = 1, **kwargs) -> SAPerceiver:
    module = SAPerceiver(hidden, **kwargs)
    with torch.no_grad():
        for param in module.parameters():
            param.fill_(1.0)
    return module


def test_v3_eq1_one_dimensional_toy_value():
    module = _ones_perceiver(self_attention=False)
    with torch.no_grad():
        module.global_query.fill_(0.0)  # V' = [V_Lo ; q] with q = 0
        v, p = module(torch.tensor([[[1.0]]]), torch.tensor([[[1.0], [2.0]]]))
    silu = torch.nn.functional.silu
    expected = 1 + silu(torch.tensor(1.0)) * 1 + silu(torch.tensor(2.0)) * 2
    assert abs(float(expected) - 5.2542469) < 1e-6
    torch.testing.assert_close(v[0, 0, 0], expected)
    torch.testing.assert_close(p[0, 0], torch.tensor(0.0))  # q = 0: SiLU(0·k) = 0, nothing is added


def test_v2_zero_hires_leaves_eq1_unchanged_and_shapes():
    torch.manual_seed(0)
    module = SAPerceiver(8, self_attention=False)
    v_lo = torch.randn(2, 4, 8)
    v, p = module(v_lo, torch.zeros(2, 12, 8))
    torch.testing.assert_close(v, v_lo)
    torch.testing.assert_close(p, module.global_query[:, 0].expand(2, -1))
    v, p = SAPerceiver(8)(v_lo, torch.randn(2, 12, 8))
    assert v.shape == (2, 4, 8) and p.shape == (2, 8)


@pytest.mark.parametrize("attention", ["silu", "softmax"])
def test_v4_masked_tiles_contribute_nothing(attention):
    torch.manual_seed(0)
    module = SAPerceiver(8, attention=attention)
    v_lo, tiles = torch.randn(1, 4, 8), torch.randn(1, 4, 4, 8)  # 4 tiles of 4 tokens
    v_two, p_two = module(v_lo, tiles[:, :2].reshape(1, 8, 8))
    mask = torch.tensor([[True, True, False, False]])
    v_masked, p_masked = module(v_lo, tiles.reshape(1, 16, 8), mask)
    torch.testing.assert_close(v_masked, v_two)
    torch.testing.assert_close(p_masked, p_two)


def test_sa_perceiver_projector_uses_hires_tiles_and_keeps_the_global_embedding():
    model, _ = _tiny("sa_perceiver", 16)
    projector = model.multi_modal_projector
    features = torch.randn(2, 16, 64)
    same = projector(features)  # no tiles: V_Hi = V_Lo (VLSA with a tower-sized image, m = 1)
    torch.testing.assert_close(projector(features, hires_features=features), same)
    assert projector.last_global_embedding.shape == (2, 64)
    other = projector(
        features, hires_features=torch.randn(2, 64, 64), hires_tile_mask=torch.ones(2, 4, dtype=torch.bool)
    )
    assert other.shape == same.shape and not torch.allclose(other, same)


def test_c_abstractor_follows_honeybee_structure():
    model, _ = _tiny("c_abstractor", 4, c_abstractor_depth=2, c_abstractor_hidden_size=32)
    projector = model.multi_modal_projector
    stage_1, pool, stage_2 = projector.net
    assert len(stage_1) == 2 and len(stage_2) == 2 and pool.output_size == 2
    first = stage_1[0]
    assert first.conv2[0].groups == 32  # depth-wise 3×3 (group size 1)
    assert first.se.fc1.out_channels == round(64 * 0.25)  # SE width from the block's input channels
    assert not isinstance(first.shortcut, torch.nn.Identity) and isinstance(stage_1[1].shortcut, torch.nn.Identity)
    assert [type(m).__name__ for m in projector.readout] == ["Linear", "SiLU", "Linear"]
    # Honeybee's C-Abstractor pools locally: a feature change in one corner moves mostly that corner's token.
    features = torch.zeros(1, 16, 64)
    base = projector(features)
    features[0, 0] = 5.0
    delta = (projector(features) - base).norm(dim=-1)[0]
    assert delta[0] > delta[3]


def test_build_projector_checks_the_config_first():
    model, _ = _tiny("c_abstractor", 4)
    config = model.config
    config.num_query_tokens = 9  # 3×3 <= 16: allowed
    assert build_projector(config)(torch.randn(1, 16, 64)).shape == (1, 9, 128)
    config.num_query_tokens = 7
    with pytest.raises(ValueError, match="perfect square"):
        build_projector(config)
    assert math.isqrt(16) == 4
