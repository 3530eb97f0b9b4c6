"""SEA: hand-computed values of ALIGNMENT_METHODS.md §1.5.5 (S1–S13), the CLIP labeller with a tiny random CLIPModel,
the ShapeWorld oracle labels (substitute) and the objective on a tiny MAGE."""

from __future__ import annotations

import math

import pytest
import torch

from alignment.sea import (
    NO_LABEL,
    ClipPatchLabeller,
    SEAObjective,
    coverage_labels,
    extract_semantic_labels,
    sea_contrastive_loss,
    sea_label_probabilities,
    sea_sample_pairs,
    sea_word_features,
    tokenize_words,
)

EYE2, EYE3 = torch.eye(2), torch.eye(3)


# ----------------------------------------------------------------------------------------------- Eq. 9 (S1–S6)
@pytest.mark.parametrize(
    ("visual", "text", "scale", "expected"),
    [
        (EYE2, EYE2, 1.0, 0.3132617),  # S1: log(1 + e^-1)
        (EYE3, EYE3, 1.0, 0.5514447),  # S2: log(1 + 2/e)
        (EYE2, EYE2, 2.0, 0.1269280),  # S2: τ = 0.5 → log(1 + e^-2)
        (EYE2, EYE2.flip(0), 1.0, 1.3132617),  # S3: swapped targets → log(1 + e)
        (torch.tensor([[1.0, 0.0], [1.0, 1.0]]), EYE2, 1.0, 0.4911570),  # S4
    ],
)
def test_contrastive_loss_hand_values(visual, text, scale, expected):
    assert abs(float(sea_contrastive_loss(visual, text, scale)) - expected) < 1e-6


def test_s1_to_s3_closed_forms():
    assert abs(math.log(1 + math.exp(-1)) - 0.3132617) < 1e-7
    assert abs(math.log(1 + 2 / math.e) - 0.5514447) < 1e-7
    assert abs(math.log(1 + math.exp(1)) - 1.3132617) < 1e-7


def test_s5_invariances():
    torch.manual_seed(0)
    x, t = torch.randn(5, 8), torch.randn(5, 8)
    base = sea_contrastive_loss(x, t, 3.0)
    torch.testing.assert_close(sea_contrastive_loss(x * torch.rand(5, 1).add(0.1), t, 3.0), base)
    torch.testing.assert_close(sea_contrastive_loss(t, x, 3.0), base)


def test_s6_single_pair_is_zero_with_a_graph():
    x = torch.randn(1, 4, requires_grad=True)
    loss = sea_contrastive_loss(x, torch.randn(1, 4), 1.0)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) == 0.0


# --------------------------------------------------------------------------------------------- Eqs. 6–8 (S7–S9)
def test_s7_label_probabilities():
    torch.testing.assert_close(
        sea_label_probabilities(torch.tensor([0.3, 0.1, 0.0, -0.2])), torch.tensor([0.75, 0.25, 0, 0])
    )
    assert float(sea_label_probabilities(torch.tensor([0.0, -0.5])).sum()) == 0.0


def test_s8_sign_convention_of_eq6():
    v = torch.tensor([[1.0, 0.0]])
    words = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    ids, scores = extract_semantic_labels(v, words, top_n=1, negate=True)
    assert ids.tolist() == [[2]] and scores.tolist() == [[1.0]]
    ids, _ = extract_semantic_labels(v, words, top_n=1, negate=False)
    assert ids.tolist() == [[0]]
    ids, scores = extract_semantic_labels(v, words, top_n=3, negate=True)  # the "< 0" filter
    assert ids.tolist() == [[2, 1, NO_LABEL]] and scores[0, 2] == 0


def test_s9_word_target_is_mean_of_subtoken_embeddings():
    embed = torch.nn.Embedding(3, 3)
    with torch.no_grad():
        embed.weight.copy_(torch.tensor([[0.0, 0, 0], [1, 0, 2], [3, 4, 0]]))
    target = sea_word_features(torch.tensor([[1, 2], [1, 0]]), torch.tensor([[True, True], [True, False]]), embed)
    torch.testing.assert_close(target, torch.tensor([[2.0, 2.0, 1.0], [1.0, 0.0, 2.0]]))


# ---------------------------------------------------------------------------------------------- §4.2 (S10–S11)
def test_s10_one_pair_per_window_inside_its_window():
    ids = torch.arange(16).reshape(1, 4, 4, 1)  # every patch has its own word
    scores = torch.ones(1, 4, 4, 1)
    b, t, w = sea_sample_pairs(ids, scores, window=2, generator=torch.Generator().manual_seed(0))
    assert len(t) == 4
    windows = sorted(((int(i) // 4) // 2, (int(i) % 4) // 2) for i in t)
    assert windows == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert torch.equal(w, t)  # the word of the sampled patch
    big = torch.arange(24 * 24).reshape(1, 24, 24, 1)
    assert len(sea_sample_pairs(big, torch.ones(1, 24, 24, 1), 2, torch.Generator().manual_seed(1))[0]) == 144
    with pytest.raises(ValueError, match="sea_window=2"):
        sea_sample_pairs(torch.zeros(1, 5, 5, 1, dtype=torch.long), torch.ones(1, 5, 5, 1), 2)


def test_s11_batch_dedup_and_unlabelled_patches():
    ids = torch.tensor([3, 3, 5, NO_LABEL]).reshape(4, 1, 1, 1)  # red, red, circle, no label
    scores = torch.tensor([1.0, 1.0, 1.0, 0.0]).reshape(4, 1, 1, 1)
    b, t, w = sea_sample_pairs(ids, scores, window=1, generator=torch.Generator().manual_seed(0))
    assert sorted(w.tolist()) == [3, 5]
    b, t, w = sea_sample_pairs(ids, scores, window=1, generator=torch.Generator().manual_seed(0), dedup=False)
    assert sorted(w.tolist()) == [3, 3, 5] and 3 not in b.tolist()


def test_similarity_weighted_draw_follows_eq7():
    ids = torch.tensor([[0, 1]]).reshape(1, 1, 1, 2).expand(2000, 1, 1, 2)
    scores = torch.tensor([0.3, 0.1]).reshape(1, 1, 1, 2).expand(2000, 1, 1, 2)
    _, _, w = sea_sample_pairs(ids, scores, 1, torch.Generator().manual_seed(0), dedup=False)
    assert abs(float((w == 0).float().mean()) - 0.75) < 0.04


# ------------------------------------------------------------------------------------------- oracle labels (S12)
def test_s12_coverage_labels():
    full = torch.ones(4, 4, dtype=torch.bool)
    ids, scores = coverage_labels([full], [[0, 6]], grid=1, background_id=9, top_n=3)  # red=0, circle=6
    assert ids[0, 0].tolist() == [0, 6, NO_LABEL]
    torch.testing.assert_close(sea_label_probabilities(scores[0, 0]), torch.tensor([0.5, 0.5, 0.0]))
    three_quarters = torch.ones(4, 4, dtype=torch.bool)
    three_quarters[:1] = False
    ids, scores = coverage_labels([three_quarters], [[0, 6]], grid=1, background_id=9, top_n=3)
    assert ids[0, 0].tolist() == [0, 6, 9]
    torch.testing.assert_close(sea_label_probabilities(scores[0, 0]), torch.tensor([0.75, 0.75, 0.25]) / 1.75)
    assert abs(0.75 / 1.75 - 0.4286) < 1e-4
    ids, scores = coverage_labels([], [], grid=2, background_id=9, top_n=2)
    assert ids[..., 0].eq(9).all() and ids[..., 1].eq(NO_LABEL).all()


def test_shapeworld_oracle_labels_from_a_rendered_scene():
    pytest.importorskip("shapeworld.world")
    from alignment.sea import shapeworld_patch_labels, shapeworld_words

    words = shapeworld_words()
    scene = {
        "id": "t",
        "grid": 3,
        "objects": [
            {
                "shape": "square",
                "colour": "red",
                "size": "large",
                "row": 0,
                "col": 0,
                "cx": 1 / 6,
                "cy": 1 / 6,
                "radius": 0.14,
            }
        ],
        "label": None,
        "marks": [],
    }
    ids, scores = shapeworld_patch_labels(scene, grid=4, words=words, image_size=64, top_n=3)
    top_left = [words[i] for i in ids[0, 0].tolist() if i >= 0]
    assert set(top_left[:2]) == {"red", "square"}
    assert [words[i] for i in ids[3, 3].tolist() if i >= 0] == ["background"]
    assert float(scores[3, 3, 0]) == 1.0


# ------------------------------------------------------------------------------------- CLIP labeller (tiny CLIP)
def _tiny_clip():
    from transformers import CLIPConfig, CLIPModel

    from mage_testing.tiny import train_tokenizer

    tokenizer = train_tokenizer(["red green blue circle square background"], vocab_size=300)
    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 16,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    return CLIPModel(config).eval(), tokenizer


def test_clip_labeller_runs_eqs_4_to_6_on_a_real_clip_model():
    model, tokenizer = _tiny_clip()
    words = ["red", "green", "blue", "circle", "square", "background"]
    labeller = ClipPatchLabeller(model, tokenizer, words, top_n=3)
    pixels = torch.randn(2, 3, 32, 32)
    ids, scores = labeller(pixels)
    assert ids.shape == scores.shape == (2, 4, 4, 3)
    assert ((ids >= 0) | (ids == NO_LABEL)).all() and (scores >= 0).all()
    # Independent recomputation of Eq. 6 for one patch.
    with torch.no_grad():
        vision = model.vision_model(pixel_values=pixels)
        patch = model.visual_projection(model.vision_model.post_layernorm(vision.last_hidden_state[:, 1:]))[1, 5]
        cos = torch.nn.functional.cosine_similarity(patch[None], labeller.word_feats, dim=-1)
    expected = (-cos).topk(3)
    kept = expected.values >= 0
    assert ids[1, 1, 1][kept].tolist() == expected.indices[kept].tolist()
    coarse_ids, _ = labeller(pixels, grid=2)
    assert coarse_ids.shape == (2, 2, 2, 3)


# -------------------------------------------------------------------------------------- the objective (S13)
@pytest.mark.parametrize(
    ("projector_type", "apply_to", "grid"), [("mlp2x_gelu", "tokens", 4), ("ian", "vab", 4), ("ian", "tokens", 2)]
)
def test_s13_objective_gradients_reach_only_the_projector_and_tau(projector_type, apply_to, grid, shape_image):
    from mage_testing.tiny import build_tiny_mage
    from training.trainer import set_trainable_for_stage

    model, processor = build_tiny_mage(["red green blue circle square background"], projector_type=projector_type)
    set_trainable_for_stage(model, 1)
    model.train()
    words = ["red", "green", "circle", "square", "background"]
    objective = SEAObjective(*tokenize_words(processor.tokenizer, words), temperature=0.07, window=1, apply_to=apply_to)
    objective.attach(model)
    assert [name for name, _ in objective.named_parameters()] == ["logit_scale"]  # the hooked VAB is not adopted
    inputs = processor(images=[shape_image, shape_image], text=["<image>\nred", "<image>\nsquare"], padding=True)
    g = torch.Generator().manual_seed(0)
    label_ids = torch.randint(0, len(words), (2, grid, grid, 2), generator=g)
    label_scores = torch.rand(2, grid, grid, 2, generator=g)
    outputs = model(**inputs)
    loss, logs = objective(model, {"sea_label_ids": label_ids, "sea_label_scores": label_scores}, outputs)
    assert loss.item() > 0 and logs["sea_pairs"] >= 2
    assert abs(logs["sea_temperature"] - 0.07) < 1e-6
    loss.backward()
    assert objective.logit_scale.grad is not None
    for name, param in model.named_parameters():
        if "multi_modal_projector" in name:
            continue
        assert param.grad is None, name
    grads = [p.grad for n, p in model.named_parameters() if "multi_modal_projector" in n and p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_objective_rejects_labels_on_the_wrong_grid(tiny_mage, shape_image):
    model, processor = tiny_mage
    objective = SEAObjective(*tokenize_words(processor.tokenizer, ["red", "blue"]), window=1)
    inputs = processor(images=[shape_image], text=["<image>\nred"])
    with torch.no_grad():
        outputs = model(**inputs)
    bad = {"sea_label_ids": torch.zeros(1, 4, 4, 1, dtype=torch.long), "sea_label_scores": torch.ones(1, 4, 4, 1)}
    with pytest.raises(ValueError, match="token grid"):
        objective(model, bad, outputs)


def test_probe_metrics_hand_values():
    from alignment.probes import modality_gap, tacs, token_word_retrieval_accuracy

    words = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    visual = torch.tensor([[2.0, 0.1], [0.1, 3.0], [1.0, 0.9]])
    assert token_word_retrieval_accuracy(visual, words, [{0}, {0}, set()]) == 0.5  # empty gold sets are not scored
    assert tacs(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), words, k=1) == pytest.approx(1.0)
    assert tacs(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), words, k=2) == pytest.approx((1 + 2**-0.5) / 2)
    assert modality_gap(torch.tensor([[1.0, 1.0]]), words) == pytest.approx(1.0)
