"""VLSA: Epigone, Eq. 3 (V5, V6), the substitute autoencoder/denoiser, the SD3 adapter's call convention,
cognition-alignment data (V7–V9, V13) and the reconstruction objective on a tiny MAGE."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from alignment.cognition import (
    PaletteQuantizer,
    TinyVQVAE,
    format_pixel_answer,
    format_vq_answer,
    insert_cognition_turns,
    parse_pixel_answer,
    parse_vq_answer,
    pixel_target,
    train_vqvae,
    vq_indices,
)
from alignment.vlsa import (
    DiffusersSD3Denoiser,
    Epigone,
    TinyAutoencoder,
    TinyDenoiser,
    VLSAReconstructionObjective,
    reconstruction_loss,
    train_autoencoder,
)


def test_v5_epigone_parameter_count_and_shapes():
    epigone = Epigone(4096, 4096, 1024, 2048, rank=256)
    token_mlp = sum(p.numel() for n, p in epigone.named_parameters() if not n.startswith("pooled"))
    assert token_mlp == 2_101_504
    tiny = Epigone(3, 5, 2, 4, rank=2)
    assert sum(p.numel() for p in tiny.parameters()) == (3 * 2 + 2) + (2 * 5 + 5) + (2 * 4 + 4)
    context, pooled = tiny(torch.randn(2, 7, 3), torch.randn(2, 2))
    assert context.shape == (2, 7, 5) and pooled.shape == (2, 4)


class _Oracle(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, z_t, t, context, pooled):
        return self.fn(z_t, t)


def test_v6_eq3_oracle_and_zero_predictors():
    z0 = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    noise = torch.randn(1, 1, 2, 2)
    t = torch.tensor([0.3])
    ctx, pooled = torch.zeros(1, 1, 1), torch.zeros(1, 1)
    oracle_velocity = _Oracle(lambda z_t, t_: noise - z0)
    assert float(reconstruction_loss(z0, oracle_velocity, ctx, pooled, t, noise, "velocity")) < 1e-12
    zero = _Oracle(lambda z_t, t_: torch.zeros_like(z_t))
    assert float(reconstruction_loss(z0, zero, ctx, pooled, t, noise, "x0")) == pytest.approx(7.5)
    identity = _Oracle(lambda z_t, t_: z_t)  # at t = 0, z_t = z0
    assert float(reconstruction_loss(z0, identity, ctx, pooled, torch.tensor([0.0]), noise, "x0")) == 0.0
    with pytest.raises(ValueError, match="rec_prediction"):
        reconstruction_loss(z0, zero, ctx, pooled, t, noise, "eps")


def test_substitute_autoencoder_and_denoiser_shapes_and_learning():
    torch.manual_seed(0)
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    autoencoder = TinyAutoencoder(latent_channels=4, width=8)
    assert autoencoder.encode(images).shape == (8, 4, 2, 2)
    losses = train_autoencoder(autoencoder, images, steps=20, batch_size=8, lr=3e-3)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    denoiser = TinyDenoiser(latent_channels=4, latent_size=4, ctx_dim=8, pooled_dim=6, width=32, layers=1, heads=2)
    out = denoiser(torch.randn(2, 4, 4, 4), torch.rand(2), torch.randn(2, 3, 8), torch.randn(2, 6))
    assert out.shape == (2, 4, 4, 4)


def test_sd3_adapter_call_convention_without_diffusers():
    calls = {}

    class FakeTransformer(torch.nn.Module):
        dtype = torch.float32

        def forward(self, hidden_states, encoder_hidden_states, pooled_projections, timestep):
            calls.update(shape=hidden_states.shape, ctx=encoder_hidden_states.shape, timestep=timestep)
            return SimpleNamespace(sample=torch.zeros_like(hidden_states))

    class FakeVAE(torch.nn.Module):
        dtype = torch.float32
        config = SimpleNamespace(scaling_factor=2.0, shift_factor=0.5)

        def encode(self, images):
            return SimpleNamespace(latent_dist=SimpleNamespace(sample=lambda: torch.ones(images.shape[0], 16, 2, 2)))

    denoiser = DiffusersSD3Denoiser(SimpleNamespace(vae=FakeVAE(), transformer=FakeTransformer()))
    assert torch.equal(denoiser.encode(torch.zeros(1, 3, 16, 16)), torch.ones(1, 16, 2, 2))  # (1 − .5)·2
    z0 = torch.randn(1, 16, 2, 2)
    loss = reconstruction_loss(
        z0,
        denoiser,
        torch.zeros(1, 3, 4096),
        torch.zeros(1, 2048),
        torch.tensor([0.25]),
        torch.zeros_like(z0),
        denoiser.prediction,
    )
    assert calls["timestep"].tolist() == [250.0] and calls["ctx"] == (1, 3, 4096)
    torch.testing.assert_close(loss, torch.nn.functional.mse_loss(0.75 * z0, z0))  # v̂ = 0 → ẑ0 = z_t


# -------------------------------------------------------------------------------------------------- cognition
def test_v7_vq_is_an_l2_argmin():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 3.0]])
    assert int(vq_indices(torch.tensor([0.9, 1.2]), codebook)) == 1
    assert int((codebook @ torch.tensor([0.9, 1.2])).argmin()) == 0  # the printed "argmin of product" differs


def test_v8_pixel_target_quadrants():
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[:2, :2], image[:2, 2:], image[2:, :2], image[2:, 2:] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
    assert pixel_target(image, (0, 0), 2).reshape(-1, 3).tolist() == [[255, 0, 0]] * 4
    assert pixel_target(image, (1, 1), 2).reshape(-1, 3).tolist() == [
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [255, 255, 255],
    ]
    with pytest.raises(ValueError, match="outside"):
        pixel_target(image, (3, 0), 2)


def test_v9_serialisation_round_trips_and_rejects_garbage():
    codes = [12, 7, 7, 3]
    assert parse_vq_answer(format_vq_answer(codes, 2)) == codes
    pixels = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [1, 2, 3]]], dtype=np.uint8)
    assert np.array_equal(parse_pixel_answer(format_pixel_answer(pixels)), pixels)
    assert format_pixel_answer(pixels) == "2x2 RGB: (255,0,0) (0,255,0) (0,0,255) (1,2,3)"
    for bad in ("2x2 codes: 1 2 3", "codes 1 2"):
        with pytest.raises(ValueError):
            parse_vq_answer(bad)
    with pytest.raises(ValueError):
        format_vq_answer([1, 2, 3], 2)


def test_v9_insertion_positions_are_reproducible_and_keep_the_image_turn():
    row = {"id": "r1", "image": "x.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A."},
        {"from": "human", "value": "More?"}, {"from": "gpt", "value": "B."}]}  # fmt: skip
    image = np.full((8, 8, 3), 128, dtype=np.uint8)
    quantizer = PaletteQuantizer([(128, 128, 128), (255, 0, 0)], ["background", "red"], grid=2)
    a = insert_cognition_turns(row, image, quantizer, random.Random(3), prob_vq=1.0, prob_pixel=1.0)
    b = insert_cognition_turns(row, image, quantizer, random.Random(3), prob_vq=1.0, prob_pixel=1.0)
    assert a == b and len(a["conversations"]) == 8
    assert a["conversations"][0]["value"].startswith("<image>") and a["conversations"][1]["value"] == "A."
    answers = [t["value"] for t in a["conversations"] if t["from"] == "gpt"]
    assert "2x2 codes: 0 0 0 0" in answers and any(ans.startswith("2x2 RGB:") for ans in answers)
    assert insert_cognition_turns(row, image, quantizer, random.Random(0), 0.0, 0.0) == row
    with pytest.raises(ValueError, match="r2"):
        insert_cognition_turns(
            {"id": "r2", "conversations": [{"from": "gpt", "value": "x"}]}, image, quantizer, random.Random(0)
        )


def test_v13_palette_codes_equal_the_cells_of_a_red_square():
    image = np.full((64, 64, 3), 255, dtype=np.uint8)
    image[0:16, 8:24] = (220, 30, 30)  # covers cells (0,1), (0,2), (1,1), (1,2) of an 8×8 grid of 8-px cells
    quantizer = PaletteQuantizer([(255, 255, 255), (220, 30, 30)], ["white", "red"], grid=8)
    codes = quantizer.encode(image).reshape(8, 8)
    expected = torch.zeros(8, 8, dtype=torch.long)
    expected[0:2, 1:3] = 1
    assert torch.equal(codes, expected)


def test_shapeworld_palette_and_tiny_vqvae():
    pytest.importorskip("shapeworld.world")
    quantizer = PaletteQuantizer.shapeworld(grid=4)
    assert quantizer.names[-1] == "background" and len(quantizer.names) == 7
    assert quantizer.encode(np.full((16, 16, 3), 128, dtype=np.uint8)).tolist() == [6] * 16
    torch.manual_seed(0)
    vqvae = TinyVQVAE(num_codes=16, dim=8, width=16)
    images = torch.rand(16, 3, 16, 16) * 2 - 1
    losses = train_vqvae(vqvae, images, steps=25, batch_size=8)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    codes = vqvae.encode_codes(images[:2])
    assert codes.shape == (2, 16) and torch.equal(codes, vqvae.encode_codes(images[:2]))


# -------------------------------------------------------------------------------------------------- objective
@pytest.mark.parametrize("projector_type", ["ian", "sa_perceiver"])
def test_reconstruction_objective_on_tiny_mage(projector_type, shape_image):
    from mage_testing.tiny import build_tiny_mage

    model, processor = build_tiny_mage(projector_type=projector_type, num_query_tokens=4)
    model.train()
    autoencoder = TinyAutoencoder(latent_channels=4, width=8)
    denoiser = TinyDenoiser(4, latent_size=8, ctx_dim=16, pooled_dim=8, width=16, layers=1, heads=2)
    d_global = 64 if projector_type == "sa_perceiver" else 128  # P from the SA-Perceiver, else mean of V''
    objective = VLSAReconstructionObjective(autoencoder, denoiser, 128, d_global, 16, 8, rank=8)
    inputs = processor(images=[shape_image, shape_image], text=["<image>\na", "<image>\nb"], padding=True)
    outputs = model(**inputs)
    loss, logs = objective(model, inputs, outputs)
    assert loss.ndim == 0 and float(loss.detach()) > 0
    loss.backward()
    assert all(p.grad is None for p in autoencoder.parameters())
    assert objective.epigone.down.weight.grad is not None and denoiser.out.weight.grad is not None
    projector_grads = [p.grad for p in model.multi_modal_projector.parameters() if p.grad is not None]
    assert projector_grads and any(float(g.abs().sum()) > 0 for g in projector_grads)


@pytest.mark.parametrize("quantizer", ["palette", "tiny_vqvae"])
def test_build_cognition_dataset_from_a_shapeworld_folder(quantizer, tmp_path):
    import json

    pytest.importorskip("shapeworld.dataset")
    from alignment.cognition import build_cognition_dataset
    from shapeworld.dataset import write_llava_split

    write_llava_split(str(tmp_path), "train", 6, seed=0, image_size=32, difficulty="easy")
    out = tmp_path / "cognition.json"
    counts = build_cognition_dataset(str(tmp_path), str(out), quantizer, prob_vq=1.0, prob_pixel=0.5, vq_grid=4,
                                     vqvae_steps=3)  # fmt: skip
    rows = json.loads(out.read_text())
    assert counts["rows"] == len(rows) == 6 and counts["vq_turns"] == 6 and 0 < counts["pixel_turns"] <= 6
    answers = [t["value"] for row in rows for t in row["conversations"] if t["from"] == "gpt"]
    codes = [parse_vq_answer(a) for a in answers if a.startswith("4x4 codes:")]
    assert len(codes) == 6 and all(len(c) == 16 for c in codes)
    assert all(row["conversations"][0]["value"].startswith("<image>") for row in rows)
    if quantizer == "palette":  # exact: recomputable from the image alone
        from PIL import Image

        first = rows[0]
        expected = PaletteQuantizer.shapeworld(4).encode(np.asarray(Image.open(first["image"]).convert("RGB"))).tolist()
        assert expected in codes
