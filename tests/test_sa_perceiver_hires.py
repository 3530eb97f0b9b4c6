"""VLSA's compressive high-resolution input through `MageModel`: with `sa_perceiver_hires_scale=s` the model takes
s·S-pixel images, encodes the area-downsampled snapshot (V_Lo) and the s² tiles (V_Hi) with the same tower and feeds
both to the SA-Perceiver. Every other projector (and s = 1) keeps the one-image path bit for bit."""

from __future__ import annotations

import pytest
import torch

from inference.threads import torch_threads
from mage_testing.tiny import build_tiny_mage, tiny_image_processor
from modeling_mage.projectors import split_into_tiles

ALL_TYPES = ["linear", "mlp2x_gelu", "resampler", "c_abstractor", "ian", "sa_perceiver"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with torch_threads(1):
        yield


def _hires(scale: int = 2, q: int = 4, seed: int = 0):
    return build_tiny_mage(projector_type="sa_perceiver", num_query_tokens=q, seed=seed, sa_perceiver_hires_scale=scale)


def _checkerboard(size: int, amplitude: float) -> torch.Tensor:
    """`(3, size, size)`, ±amplitude alternating per pixel: every 2×2 block has mean 0, so the area snapshot of an
    image plus this pattern is the snapshot of the image (only the tiles see it)."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (amplitude * (1 - 2 * ((rows + cols) % 2)).float()).expand(3, size, size)


def test_hires_shapes_and_named_size_error():
    model, _ = _hires(2, q=4)
    assert model.multi_modal_projector.hires_scale == 2 and model.config.image_seq_length == 4
    out = model.get_image_features(torch.randn(3, 3, 128, 128), return_dict=True).pooler_output
    assert out.shape == (3, 4, 128) and torch.isfinite(out).all()
    assert model.multi_modal_projector.last_global_embedding.shape == (3, 64)
    with pytest.raises(
        ValueError, match=r"expects 128x128 \(sa_perceiver_hires_scale=2: 2x2 tiles of the tower's 64x64\)"
    ):
        model.get_image_features(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="sa_perceiver_hires_scale"):
        _hires(0)


def test_hires_features_are_the_snapshot_and_the_row_major_tiles():
    model, _ = _hires(2, q=16)
    model.eval()
    pixels = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    snapshot = torch.nn.functional.avg_pool2d(pixels, 2)  # area resize by an integer factor = block mean
    tiles = torch.stack([split_into_tiles(image, 64) for image in pixels])  # (2, 4, 3, 64, 64), independent code
    inner = model.model
    with torch.no_grad():
        v_lo = inner.select_vision_features(snapshot)
        v_hi = inner.select_vision_features(tiles.flatten(0, 1)).reshape(2, 4 * 16, 64)
        expected = inner.multi_modal_projector(v_lo, snapshot, hires_features=v_hi)
        torch.testing.assert_close(model.get_image_features(pixels, return_dict=True).pooler_output, expected)
        # without tiles (V_Hi = V_Lo) the output is different: the tiles are used
        assert not torch.allclose(inner.multi_modal_projector(v_lo, snapshot), expected)


def test_hires_content_changes_the_output_when_the_snapshot_does_not():
    model, _ = _hires(2)
    model.eval()
    image = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    detail = _checkerboard(128, 0.5)[None]
    with torch.no_grad():
        snap_a = torch.nn.functional.interpolate(image, size=(64, 64), mode="area")
        snap_b = torch.nn.functional.interpolate(image + detail, size=(64, 64), mode="area")
        torch.testing.assert_close(snap_a, snap_b)  # the snapshot cannot see the detail
        a, b = (
            model.get_image_features(image, return_dict=True).pooler_output,
            model.get_image_features(image + detail, return_dict=True).pooler_output,
        )
    # float noise alone gives exactly 0 (same input, same output); the detail moves the output by 2-8 % (5 seeds measured)
    assert float((a - b).norm() / a.norm()) > 3e-3
    # and the gradient of the output reaches the tile-only detail direction
    pixels = image.clone().requires_grad_(True)
    model.get_image_features(pixels, return_dict=True).pooler_output.square().sum().backward()
    assert float((pixels.grad * detail).sum().abs()) > 0


def test_hires_full_forward_through_the_processor_trains_every_projector_parameter(shape_image):
    from processing_mage import MageProcessor

    model, processor = _hires(2)
    processor = MageProcessor(tiny_image_processor(128), processor.tokenizer, num_image_tokens=4,
                              chat_template=processor.chat_template)  # fmt: skip
    model.train()
    inputs = processor(
        images=[shape_image, shape_image], text=["<image>\nred square", "<image>\na shape"], padding=True
    )
    assert inputs["pixel_values"].shape == (2, 3, 128, 128)
    labels = inputs["input_ids"].clone()
    labels[labels == model.config.image_token_id] = -100
    out = model(**inputs, labels=labels)
    assert out.image_hidden_states.shape == (2, 4, 128) and torch.isfinite(out.loss)
    out.loss.backward()
    for name, param in model.multi_modal_projector.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_hires_scale_is_saved_and_reloaded(tmp_path):
    from modeling_mage import MageForConditionalGeneration

    model, _ = _hires(2, seed=3)
    model.save_pretrained(tmp_path)
    loaded = MageForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.sa_perceiver_hires_scale == 2 and loaded.multi_modal_projector.hires_scale == 2
    pixels = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.get_image_features(pixels, return_dict=True).pooler_output,
            model.eval().get_image_features(pixels, return_dict=True).pooler_output,
        )


@pytest.mark.parametrize("projector_type", ALL_TYPES)
def test_scale_one_keeps_the_single_image_path_bit_for_bit(projector_type):
    model, _ = build_tiny_mage(projector_type=projector_type, num_query_tokens=4)
    model.eval()
    assert model.multi_modal_projector.hires_scale == 1
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        direct = model.model.multi_modal_projector(model.model.select_vision_features(pixels), pixels)
        assert torch.equal(model.get_image_features(pixels, return_dict=True).pooler_output, direct)
