"""MageConfig validation, projector shapes, the forward pass, save/load, gradient checkpointing, ITDM features."""

from __future__ import annotations

import copy

import pytest
import torch

from mage_testing.tiny import build_tiny_mage, tiny_config, train_tokenizer
from modeling_mage import (
    MageConfig,
    MageForConditionalGeneration,
    MageIntelligentAlignmentNetwork,
    build_projector,
)
from modeling_mage.ian import MageCrossAttentionBlock, grid_cell_mask, grid_locality_bias


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([], vocab_size=300)


def _inputs(processor, images, questions):
    texts = [f"USER: <image>\n{q} ASSISTANT:" for q in questions]
    return processor(images=images, text=texts, padding=True, return_tensors="pt")


# ------------------------------------------------------------------------------------------------ config validation
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_query_tokens": 5}, "num_query_tokens=5 must be a positive perfect square"),
        ({"num_query_tokens": 25}, "larger than the vision tower's patch grid"),
        ({"num_query_tokens": 0}, "positive perfect square"),
        ({"vision_feature_select_strategy": "cls"}, "vision_feature_select_strategy='cls'"),
        ({"projector_type": "qformer"}, "projector_type='qformer' is not supported; expected one of"),
        ({"seb_query_source": "text"}, "seb_query_source='text'"),
        ({"seb_attention_bias": "alibi"}, "seb_attention_bias='alibi'"),
        ({"itdm_reduction": "max"}, "itdm_reduction='max'"),
        ({"itdm_text_source": "logits"}, "itdm_text_source='logits'"),
        ({"seb_num_heads": 3}, "seb_num_heads=3 must divide the LM hidden size (128)"),
        ({"vab_depth": 0}, "vab_depth=0"),
        ({"vision_feature_layer": [-2, -1]}, "vision_feature_layer=[-2, -1]"),
    ],
)
def test_invalid_config_names_field_value_and_choices(tokenizer, overrides, message):
    with pytest.raises(ValueError) as error:
        tiny_config(tokenizer, **overrides)
    assert message in str(error.value)


def test_config_defaults_are_the_papers():
    config = MageConfig()
    assert config.vision_config.image_size == 336 and config.vision_config.patch_size == 14
    assert config.num_patches == 576 and config.num_query_tokens == 144 and config.image_seq_length == 144
    assert config.vision_feature_layer == -2 and config.vision_feature_select_strategy == "default"
    assert config.projector_type == "ian" and config.itdm_weight == 1.0


def test_config_round_trips_through_dict(tokenizer):
    config = tiny_config(tokenizer, num_query_tokens=16, seb_query_source="features")
    restored = MageConfig.from_dict(config.to_dict())
    assert restored.num_query_tokens == 16 and restored.seb_query_source == "features"
    assert restored.vision_config.hidden_size == 64 and restored.text_config.hidden_size == 128


# ---------------------------------------------------------------------------------------------------- projectors
@pytest.mark.parametrize(
    ("projector_type", "queries", "source", "strategy", "expected_tokens"),
    [
        ("ian", 1, "pixels", "default", 1),
        ("ian", 4, "pixels", "default", 4),
        ("ian", 16, "pixels", "default", 16),  # Q = N_p: no token reduction
        ("ian", 4, "features", "default", 4),
        ("ian", 16, "features", "full", 16),
        ("mlp2x_gelu", 4, "pixels", "default", 16),
        ("linear", 4, "pixels", "default", 16),
        ("mlp2x_gelu", 4, "pixels", "full", 17),
    ],
)
def test_projector_shapes_and_gradients(tokenizer, projector_type, queries, source, strategy, expected_tokens):
    config = tiny_config(
        tokenizer,
        projector_type=projector_type,
        num_query_tokens=queries,
        seb_query_source=source,
        vision_feature_select_strategy=strategy,
    )
    assert config.image_seq_length == expected_tokens
    projector = build_projector(config)
    patches = config.num_patches + (1 if strategy == "full" else 0)
    features = torch.randn(2, patches, config.vision_config.hidden_size, requires_grad=True)
    pixels = torch.randn(2, 3, 64, 64)
    output = projector(features, pixels)
    assert output.shape == (2, expected_tokens, config.text_config.hidden_size)
    output.square().mean().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert all(p.grad is not None for p in projector.parameters() if p.requires_grad)


def test_ian_is_vab_then_seb_with_pixel_queries(tokenizer):
    config = tiny_config(tokenizer, num_query_tokens=4)
    ian = MageIntelligentAlignmentNetwork(config)
    features, pixels = torch.randn(1, 16, 64), torch.randn(1, 3, 64, 64)
    other_pixels = torch.randn(1, 3, 64, 64)
    # Queries come from the pixels: other pixels, same features → different output.
    assert not torch.allclose(ian(features, pixels), ian(features, other_pixels))
    with pytest.raises(ValueError, match="needs `pixel_values`"):
        ian(features, None)


def test_seb_output_norm_is_off_by_default_and_loads_old_checkpoints(tokenizer, tmp_path):
    features, pixels = torch.randn(3, 16, 64), torch.randn(3, 3, 64, 64)
    plain = MageIntelligentAlignmentNetwork(tiny_config(tokenizer, num_query_tokens=4))
    assert not any("final_norm" in name for name, _ in plain.named_parameters())
    tokens = plain(features, pixels)
    # Without the norm each token keeps the residual stream's scale, which is not pinned to √D_l.
    assert not torch.allclose(tokens.norm(dim=-1), torch.full(tokens.shape[:2], tokens.shape[-1] ** 0.5), rtol=0.05)
    # The earlier layout (a LayerNorm on the SEB output) stays loadable with `seb_output_norm=True`.
    config = tiny_config(tokenizer, num_query_tokens=4)
    config.seb_output_norm = True
    model = MageForConditionalGeneration(config)
    seb = model.model.multi_modal_projector.seb
    assert isinstance(seb.final_norm, torch.nn.LayerNorm)
    normed = model.model.multi_modal_projector(features, pixels)
    model.save_pretrained(tmp_path)
    reloaded = MageForConditionalGeneration.from_pretrained(tmp_path)
    assert reloaded.config.seb_output_norm is True
    assert torch.equal(reloaded.model.multi_modal_projector(features, pixels), normed)


def test_grid_locality_bias_by_hand():
    # One query cell over a 2 × 2 patch grid: its centre (1, 1) is √0.5 from every patch centre; σ = cell / 2 = 1.
    assert torch.allclose(grid_locality_bias(1, 2, 1), torch.full((1, 1, 4), -0.25))
    # Q = N_p on a 3 × 3 grid, two heads: σ = 0.5 then 1 patch; the middle query's own patch 0, a side neighbour
    # -1 / (2 σ²), a corner -2 / (2 σ²).
    bias = grid_locality_bias(3, 3, 2)
    assert bias.shape == (2, 9, 9)
    assert bias[0, 4].tolist() == [-4.0, -2.0, -4.0, -2.0, 0.0, -2.0, -4.0, -2.0, -4.0]
    assert bias[1, 4].tolist() == [-1.0, -0.5, -1.0, -0.5, 0.0, -0.5, -1.0, -0.5, -1.0]


def test_seb_locality_bias_reads_the_patches_under_each_query_and_survives_save_load(tokenizer, tmp_path):
    config = tiny_config(tokenizer, num_query_tokens=4)  # 4 × 4 patches, 2 × 2 queries
    assert config.seb_attention_bias == "gaussian"
    model = MageForConditionalGeneration(config)
    seb = model.model.multi_modal_projector.seb
    assert not any(key.endswith("attention_bias") for key in model.state_dict())  # computed, not saved
    # At initialisation the content logits are ~0, so head 0 (σ = half a cell) puts most of each query's attention
    # on the 2 × 2 patches of its own cell (0.68 of it; 0.25 without the bias).
    weights = torch.softmax(seb.attention_bias[0], dim=-1).view(2, 2, 4, 4)
    assert weights[0, 0, :2, :2].sum() > 0.6 and weights[1, 1, 2:, 2:].sum() > 0.6
    features, pixels = torch.randn(2, 16, 64), torch.randn(2, 3, 64, 64)
    tokens = model.model.multi_modal_projector(features, pixels)
    model.save_pretrained(tmp_path)
    # transformers 5 builds the model on the meta device: the non-persistent bias must be recomputed on load.
    reloaded = MageForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(reloaded.model.multi_modal_projector.seb.attention_bias, seb.attention_bias)
    assert torch.equal(reloaded.model.multi_modal_projector(features, pixels), tokens)
    # "none" is plain content attention, the layout of earlier checkpoints (same weights, no bias buffer).
    plain = MageForConditionalGeneration.from_pretrained(tmp_path, seb_attention_bias="none")
    assert plain.model.multi_modal_projector.seb.attention_bias is None
    assert not torch.allclose(plain.model.multi_modal_projector(features, pixels), tokens)


def test_grid_cell_mask_by_hand():
    # Q = N_p: each query reads its own patch only.
    mask = grid_cell_mask(3, 3, 2)
    assert mask.shape == (2, 9, 9)
    assert torch.equal(mask[0] == 0, torch.eye(9, dtype=torch.bool)) and torch.equal(mask[1], mask[0])
    # 2 × 2 queries over 4 × 4 patches: query 1 (top right) reads patches (0, 2), (0, 3), (1, 2), (1, 3).
    assert (grid_cell_mask(2, 4, 1)[0, 1] == 0).nonzero().flatten().tolist() == [2, 3, 6, 7]
    # 3 × 3 queries over 4 × 4 patches (cells 4/3 patches wide): every patch belongs to exactly one cell.
    inside = grid_cell_mask(3, 4, 1)[0] == 0
    assert inside.sum(0).tolist() == [1] * 16 and inside.any(1).all()


def test_seb_cell_mask_keeps_each_query_to_its_cell(tokenizer, tmp_path):
    config = tiny_config(tokenizer, num_query_tokens=4, seb_attention_bias="cell")  # 4 × 4 patches, 2 × 2 queries
    block = MageCrossAttentionBlock(config).eval()
    mask = grid_cell_mask(2, 4, config.seb_num_heads)[None]
    queries, context = torch.randn(1, 4, 128), torch.randn(1, 16, 128)
    changed = context.clone()
    changed[:, [2, 3, 6, 7]] = torch.randn(1, 4, 128)  # the patches of query 1's cell only
    before, after = block(queries, context, mask), block(queries, changed, mask)
    assert torch.equal(before[:, [0, 2, 3]], after[:, [0, 2, 3]])
    assert not torch.allclose(before[:, 1], after[:, 1])
    model = MageForConditionalGeneration(config)
    features, pixels = torch.randn(2, 16, 64), torch.randn(2, 3, 64, 64)
    tokens = model.model.multi_modal_projector(features, pixels)
    assert torch.isfinite(tokens).all()
    model.save_pretrained(tmp_path)
    reloaded = MageForConditionalGeneration.from_pretrained(tmp_path)
    assert reloaded.config.seb_attention_bias == "cell"
    assert torch.equal(reloaded.model.multi_modal_projector(features, pixels), tokens)


@pytest.mark.parametrize("strategy", ["default", "full"])
def test_seb_residual_stream_is_the_pooled_vab_or_the_queries(tokenizer, strategy):
    config = tiny_config(tokenizer, num_query_tokens=4, seb_residual="vab")  # 4 × 4 patches, 2 × 2 queries
    config.vision_feature_select_strategy = strategy
    ian = MageIntelligentAlignmentNetwork(config).eval()
    for layer in ian.seb.layers:  # the attention and MLP branches add nothing: the output is the residual stream
        torch.nn.init.zeros_(layer.o_proj.weight), torch.nn.init.zeros_(layer.o_proj.bias)
        torch.nn.init.zeros_(layer.fc2.weight), torch.nn.init.zeros_(layer.fc2.bias)
    features, pixels = torch.randn(2, 17 if strategy == "full" else 16, 64), torch.randn(2, 3, 64, 64)
    aligned = ian.vab(features)[:, -16:]
    pooled = aligned.view(2, 2, 2, 2, 2, 128).mean(dim=(2, 4)).reshape(2, 4, 128)  # (B, row, r, col, c, D) cells
    assert torch.allclose(ian(features, pixels), pooled, atol=1e-6)
    ian.seb.residual = "queries"
    queries = ian.seb.query_cnn(pixels, None) + ian.seb.position_embedding
    assert torch.allclose(ian(features, pixels), queries, atol=1e-6)


def test_seb_locality_bias_gives_a_kept_cls_token_no_bias(tokenizer):
    config = tiny_config(tokenizer, num_query_tokens=4)
    config.vision_feature_select_strategy, config.seb_query_source = "full", "features"
    ian = MageIntelligentAlignmentNetwork(config)
    assert ian(torch.randn(2, 17, 64)).shape == (2, 4, 128)


# ------------------------------------------------------------------------------------------------------- forward
def test_forward_shapes_loss_and_image_hidden_states(tiny_mage, shape_image):
    model, processor = tiny_mage
    inputs = _inputs(processor, [shape_image, shape_image], ["What is it?", "Which colour is the square?"])
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == model.config.image_token_id, -100)
    with torch.no_grad():
        output = model(**inputs, labels=labels)
    batch, length = inputs["input_ids"].shape
    assert output.logits.shape == (batch, length, model.config.text_config.vocab_size)
    assert output.image_hidden_states.shape == (2, 4, 128)
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)


def test_images_change_the_logits(tiny_mage, shape_image):
    model, processor = tiny_mage
    from PIL import Image

    blank = Image.new("RGB", (64, 64), (128, 128, 128))
    with torch.no_grad():
        with_shape = model(**_inputs(processor, [shape_image], ["What is it?"])).logits
        with_blank = model(**_inputs(processor, [blank], ["What is it?"])).logits
    assert not torch.allclose(with_shape[:, -1], with_blank[:, -1])


def test_placeholder_count_mismatch_is_a_clear_error(tiny_mage, shape_image):
    model, processor = tiny_mage
    inputs = _inputs(processor, [shape_image], ["What is it?"])
    ids = inputs["input_ids"].clone()
    ids[0, (ids[0] == model.config.image_token_id).nonzero()[0]] = processor.tokenizer.unk_token_id
    with pytest.raises(ValueError, match=r"holds 3 image placeholder tokens .* 1 image\(s\) × 4 tokens"):
        model(input_ids=ids, attention_mask=inputs["attention_mask"], pixel_values=inputs["pixel_values"])
    # placeholders without pixel_values are embedded as ordinary tokens, as LLaVA does (issue 24; warned once)
    text_only = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    assert text_only.logits.shape[:2] == inputs["input_ids"].shape


def test_wrong_pixel_size_is_a_clear_error(tiny_mage, shape_image):
    """(An input past `max_position_embeddings` warns and runs, as LLaVA's does: tests/test_generation_contract.py.)"""
    model, processor = tiny_mage
    inputs = _inputs(processor, [shape_image], ["What is it?"])
    with pytest.raises(ValueError, match=r"expects 64x64; preprocess images with the model's MageProcessor"):
        model(input_ids=inputs["input_ids"], pixel_values=torch.zeros(1, 3, 32, 32))


def test_text_only_forward(tiny_mage):
    model, processor = tiny_mage
    inputs = processor(text=["USER: hello ASSISTANT:"], return_tensors="pt")
    with torch.no_grad():
        output = model(**inputs)
    assert output.image_hidden_states is None and output.logits.shape[1] == inputs["input_ids"].shape[1]


def test_sdpa_and_eager_agree(tiny_mage, shape_image, tiny_mage_dir):
    _, processor = tiny_mage
    inputs = _inputs(processor, [shape_image], ["What is it?"])
    logits = {}
    for implementation in ("eager", "sdpa"):
        model = MageForConditionalGeneration.from_pretrained(tiny_mage_dir, attn_implementation=implementation)
        with torch.no_grad():
            logits[implementation] = model(**inputs).logits
    torch.testing.assert_close(logits["eager"], logits["sdpa"], rtol=1e-4, atol=1e-4)


def test_bf16_forward_runs(tiny_mage_dir, tiny_mage, shape_image):
    _, processor = tiny_mage
    model = MageForConditionalGeneration.from_pretrained(tiny_mage_dir, dtype=torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.bfloat16
    with torch.no_grad():
        output = model(**_inputs(processor, [shape_image], ["What is it?"]))
    assert output.logits.dtype == torch.bfloat16 and torch.isfinite(output.logits.float()).all()


# ------------------------------------------------------------------------------------------------- save / load
def test_save_load_round_trip_keeps_logits_and_writes_remote_code(tiny_mage, tiny_mage_dir, shape_image):
    import json

    model, processor = tiny_mage
    reloaded = MageForConditionalGeneration.from_pretrained(tiny_mage_dir)
    inputs = _inputs(processor, [shape_image], ["What is it?"])
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, reloaded(**inputs).logits, rtol=0, atol=0)
    files = {p.name for p in tiny_mage_dir.iterdir()}
    assert {"model.safetensors", "configuration_mage.py", "modeling_mage.py", "ian.py", "processing_mage.py"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    auto_map = json.loads((tiny_mage_dir / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForImageTextToText", "AutoModelForVision2Seq"}


def test_auto_classes_resolve_in_process(tiny_mage_dir):
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

    from modeling_mage import MageModel
    from processing_mage import MageProcessor

    assert isinstance(AutoConfig.from_pretrained(tiny_mage_dir), MageConfig)
    assert isinstance(AutoModelForImageTextToText.from_pretrained(tiny_mage_dir), MageForConditionalGeneration)
    assert isinstance(AutoModel.from_pretrained(tiny_mage_dir), MageModel)
    assert isinstance(AutoProcessor.from_pretrained(tiny_mage_dir), MageProcessor)


# -------------------------------------------------------------------------------------- gradient checkpointing
def _gradients(model, inputs):
    model.zero_grad()
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == model.config.image_token_id, -100)
    model(**inputs, labels=labels).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients(tiny_mage, shape_image):
    base, processor = tiny_mage
    model = copy.deepcopy(base).train()
    for module in model.modules():  # dropout-free comparison
        if hasattr(module, "p") and isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    inputs = _inputs(processor, [shape_image, shape_image], ["What is it?", "Which colour?"])
    plain = _gradients(model, inputs)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.is_gradient_checkpointing
    checkpointed = _gradients(model, inputs)
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("num_items", [None, 7])
def test_loss_without_logits_equals_the_full_loss_and_gradients(tiny_mage, shape_image, num_items):
    """`return_logits=False` (what the trainers pass) runs the LM head at supervised positions only; the loss and
    every gradient must be those of the full `(B, L, V)` computation, with and without `num_items_in_batch`."""
    base, processor = tiny_mage
    model = copy.deepcopy(base).eval()
    inputs = _inputs(processor, [shape_image, shape_image], ["What is it?", "Which colour is the square?"])
    labels = inputs["input_ids"].clone()
    labels[:, : labels.shape[1] // 2] = -100  # a prompt-like masked prefix
    labels[1, -2:] = -100
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    results = []
    for return_logits in (True, False):
        model.zero_grad()
        output = model(**inputs, labels=labels, return_logits=return_logits, **extra)
        output.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((output, grads))
    (full, full_grads), (kept, kept_grads) = results
    assert kept.logits is None and full.logits is not None
    torch.testing.assert_close(kept.loss, full.loss)
    assert full_grads.keys() == kept_grads.keys() and len(full_grads) > 0
    for name in full_grads:
        torch.testing.assert_close(kept_grads[name], full_grads[name], rtol=1e-5, atol=1e-6, msg=name)


# ---------------------------------------------------------------------------------------------------------- ITDM
@pytest.mark.parametrize("text_source", ["hidden", "embeddings"])
def test_itdm_features(text_source, shape_image):
    model, processor = build_tiny_mage(seed=1, itdm_text_source=text_source)
    pixel_values = processor.image_processor([shape_image, shape_image], return_tensors="pt")["pixel_values"]
    text = processor.tokenizer(["a red square", "a red square on grey"], padding=True, return_tensors="pt")
    d_ian, d_llm = model.get_itdm_features(
        pixel_values=pixel_values, text_input_ids=text["input_ids"], text_attention_mask=text["attention_mask"]
    )
    assert d_ian.shape == d_llm.shape == (2, 128)
    assert d_ian.requires_grad and not d_llm.requires_grad
    # d_ian is the mean over queries of the projector output.
    torch.testing.assert_close(d_ian, model.get_image_features(pixel_values, return_dict=True).pooler_output.mean(1))
    # d_llm is the masked mean: padding must not change it.
    single = processor.tokenizer(["a red square"], return_tensors="pt")
    _, d_single = model.get_itdm_features(
        image_hidden_states=torch.zeros(1, 4, 128),
        text_input_ids=single["input_ids"],
        text_attention_mask=single["attention_mask"],
    )
    torch.testing.assert_close(d_single[0], d_llm[0], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------------- builders
def test_from_vision_text_pretrained_loads_both_towers(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, LlamaConfig, LlamaForCausalLM

    from processing_mage import MageProcessor

    tokenizer = train_tokenizer([], vocab_size=300)
    clip = CLIPModel(
        CLIPConfig(
            vision_config={
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "image_size": 64,
                "patch_size": 16,
            },
            text_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "vocab_size": 99,
            },
            projection_dim=32,
        )
    )
    clip.save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(
        tmp_path / "clip"
    )
    llama = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=len(tokenizer) - 1,
            max_position_embeddings=256,
        )
    )
    llama.save_pretrained(tmp_path / "llama")
    tokenizer.save_pretrained(tmp_path / "llama")

    processor = MageProcessor.from_vision_text_pretrained(tmp_path / "clip", tmp_path / "llama", num_image_tokens=4)
    model = MageForConditionalGeneration.from_vision_text_pretrained(
        tmp_path / "clip", tmp_path / "llama", tokenizer=processor.tokenizer, num_query_tokens=4, seb_num_heads=4
    )
    assert model.config.image_token_id == processor.image_token_id
    assert model.get_input_embeddings().weight.shape[0] == len(processor.tokenizer)
    clip_weights = clip.vision_model.state_dict()
    for name, tensor in model.model.vision_tower.state_dict().items():
        torch.testing.assert_close(tensor, clip_weights[name], msg=name)
    torch.testing.assert_close(
        model.model.language_model.layers[0].self_attn.q_proj.weight, llama.model.layers[0].self_attn.q_proj.weight
    )
    torch.testing.assert_close(model.lm_head.weight[: llama.config.vocab_size], llama.lm_head.weight)


def test_device_map_auto_loads_and_runs(tiny_mage_dir, tiny_mage, shape_image):
    _, processor = tiny_mage
    model = MageForConditionalGeneration.from_pretrained(tiny_mage_dir, device_map="auto")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    no_split = set(model._no_split_modules)
    assert {"MageIntelligentAlignmentNetwork", "LlamaDecoderLayer"} <= no_split  # what device_map keeps whole
    with torch.no_grad():
        assert torch.isfinite(model(**_inputs(processor, [shape_image], ["What is it?"])).logits).all()


def test_fp16_weights_load(tiny_mage_dir):
    model = MageForConditionalGeneration.from_pretrained(tiny_mage_dir, dtype=torch.float16)
    assert model.model.multi_modal_projector.vab.linears[0].weight.dtype == torch.float16
