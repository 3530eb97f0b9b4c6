"""MAGE's generation contract (issue 24): the behaviours transformers' `GenerationTesterMixin` checks on LLaVA.

The mixin lives in transformers' `tests/generation/test_utils.py`, which the sdist does not ship (see
tests/transformers_sdist.py), so these are MAGE's own tests of the same behaviours, on the tiny MAGE of conftest.py:
greedy / sampling / beam search with and without the KV cache, assisted decoding (assistant model and prompt
lookup), eager vs SDPA attention, generation from `inputs_embeds`, a static cache under beam search and sampling,
left padding at the forward level, and prompts that hold image placeholders but come without `pixel_values`.
tests/test_generation.py already covers batched left-padded greedy = one by one, static = dynamic cache under greedy,
the compiled static cache, text-only prompts, 4-bit loading and the KV cache under either name; not repeated here.
The last tests pin the model-side parts of the contract generation leans on: `return_dict=False` tuples,
`get_image_features`' three return forms, and no length guard past `max_position_embeddings`.
"""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image, ImageDraw

NEW_TOKENS = 6


def _images(count: int) -> list[Image.Image]:
    images = []
    for index in range(count):
        image = Image.new("RGB", (64, 64), (110, 110, 110))
        colour = [(210, 20, 20), (20, 210, 20), (20, 20, 210)][index % 3]
        ImageDraw.Draw(image).rectangle([6 + 9 * index, 6, 36, 30 + 7 * index], fill=colour)
        images.append(image)
    return images


@pytest.fixture()
def batch(tiny_mage) -> dict[str, torch.Tensor]:
    """Two left-padded image prompts of different lengths: `input_ids (2, L)`, `attention_mask`, `pixel_values
    (2, 3, 64, 64)`."""
    _, processor = tiny_mage
    prompts = [f"USER: <image>\n{q} ASSISTANT:" for q in ("What is it?", "Which colour is the large square?")]
    inputs = processor(images=_images(2), text=prompts, padding=True, return_tensors="pt")
    assert (inputs["attention_mask"][:, 0] == 0).any(), "the prompts must differ in length"
    return dict(inputs)


@pytest.fixture()
def single(tiny_mage) -> dict[str, torch.Tensor]:
    """One image prompt, unpadded (assisted decoding takes batch size 1)."""
    _, processor = tiny_mage
    return dict(processor(images=_images(1), text=["USER: <image>\nWhat is it? ASSISTANT:"], return_tensors="pt"))


def _generate(model, inputs: dict, **kwargs):
    """`generate` with `NEW_TOKENS` forced new tokens and the outputs as a dict (sequences, scores, ...)."""
    kwargs.setdefault("do_sample", False)
    with torch.no_grad():
        return model.generate(
            **inputs,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            return_dict_in_generate=True,
            output_scores=True,
            **kwargs,
        )


def _new_tokens(output, inputs: dict) -> list[list[int]]:
    return output.sequences[:, inputs["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize(
    "mode",
    [
        {"do_sample": False},
        {"do_sample": True, "top_k": 5, "temperature": 0.9},
        {"num_beams": 2, "num_return_sequences": 2},
    ],
    ids=["greedy", "sample", "beam"],
)
def test_decoding_with_and_without_cache_agree(tiny_mage, batch, mode):
    """Greedy, sampling (same seed) and beam search give the same tokens with the KV cache and without it (where the
    whole sequence, images included, is recomputed every step)."""
    model, _ = tiny_mage
    outputs = []
    for use_cache in (True, False):
        torch.manual_seed(0)
        outputs.append(_generate(model, batch, use_cache=use_cache, **mode))
    cached, uncached = outputs
    rows = batch["input_ids"].shape[0] * mode.get("num_return_sequences", 1)
    assert cached.sequences.shape == (rows, batch["input_ids"].shape[1] + NEW_TOKENS)
    assert _new_tokens(cached, batch) == _new_tokens(uncached, batch)
    if not mode.get("num_beams"):
        assert len(cached.scores) == NEW_TOKENS
        for with_cache, without_cache in zip(cached.scores, uncached.scores):
            torch.testing.assert_close(with_cache, without_cache, rtol=1e-4, atol=1e-4)


def test_beam_search_keeps_each_rows_image(tiny_mage, batch):
    """Beam expansion repeats every row's image with it: each row's best beam equals that row generated alone."""
    model, processor = tiny_mage
    beams = _generate(model, batch, num_beams=3)
    prompts = processor.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=False)
    for row, image in enumerate(_images(2)):
        text = prompts[row].replace(processor.tokenizer.pad_token, "")
        text = text.replace(processor.image_token * processor.num_image_tokens, processor.image_token)
        text = text.removeprefix(processor.tokenizer.bos_token)
        alone = dict(processor(images=[image], text=[text], return_tensors="pt"))
        assert alone["input_ids"].shape[1] == int(batch["attention_mask"][row].sum()), "rebuilt prompt differs"
        assert _new_tokens(beams, batch)[row] == _new_tokens(_generate(model, alone, num_beams=3), alone)[0], row


@pytest.mark.parametrize("assistant", ["model", "prompt_lookup"], ids=["assistant_model", "prompt_lookup_decoding"])
def test_assisted_decoding_equals_greedy(tiny_mage, single, assistant):
    """Assisted decoding (the model as its own assistant, or prompt lookup) gives greedy's tokens: the candidate
    steps re-read the image placeholders already in the prompt without `pixel_values`."""
    model, _ = tiny_mage
    # As GenerationTesterMixin does for models with an image token: it is never generated, so prompt lookup does not
    # propose the prompt's placeholder run as a continuation.
    no_image_token = {"bad_words_ids": [[model.config.image_token_id]]}
    greedy = _generate(model, single, **no_image_token)
    extra = {"assistant_model": model} if assistant == "model" else {"prompt_lookup_num_tokens": 2}
    assisted = _generate(model, single, **extra, **no_image_token)
    assert _new_tokens(assisted, single) == _new_tokens(greedy, single)


def test_eager_and_sdpa_attention_agree(tiny_mage, batch):
    """The eager attention path (the one that can return attention maps) and SDPA give the same logits and tokens,
    left padding included; eager returns one `(B, heads, L, L)` map per LM layer."""
    model, _ = tiny_mage
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    assert model.config.text_config._attn_implementation == "sdpa"
    with torch.no_grad():
        sdpa_logits = model(**batch).logits
        eager_out = eager(**batch, output_attentions=True)
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(eager_out.logits[mask], sdpa_logits[mask], rtol=1e-4, atol=1e-4)
    length = batch["input_ids"].shape[1]
    text_config = model.config.text_config
    assert len(eager_out.attentions) == text_config.num_hidden_layers
    assert eager_out.attentions[0].shape == (2, text_config.num_attention_heads, length, length)
    assert _new_tokens(_generate(eager, batch), batch) == _new_tokens(_generate(model, batch), batch)


def test_generate_returns_attentions_and_hidden_states_with_eager(tiny_mage, single):
    model, _ = tiny_mage
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    output = _generate(eager, single, output_attentions=True, output_hidden_states=True)
    layers = model.config.text_config.num_hidden_layers
    assert len(output.attentions) == len(output.hidden_states) == NEW_TOKENS
    assert len(output.attentions[0]) == layers and len(output.hidden_states[0]) == layers + 1
    prompt_length = single["input_ids"].shape[1]
    assert output.attentions[0][0].shape[-2:] == (prompt_length, prompt_length)
    assert output.attentions[1][0].shape[-2:] == (1, prompt_length + 1)


def test_generation_from_inputs_embeds_equals_input_ids(tiny_mage, batch):
    """`generate(inputs_embeds=..., pixel_values=...)` — the placeholders found by their embedding — continues the
    prompt as `generate(input_ids=...)` does; the output then holds only the new tokens, as for LLaVA."""
    model, _ = tiny_mage
    from_ids = _generate(model, batch)
    embeds = model.get_input_embeddings()(batch["input_ids"]).detach()
    inputs = {"inputs_embeds": embeds, "attention_mask": batch["attention_mask"], "pixel_values": batch["pixel_values"]}
    from_embeds = _generate(model, inputs)
    assert from_embeds.sequences.tolist() == _new_tokens(from_ids, batch)
    for by_ids, by_embeds in zip(from_ids.scores, from_embeds.scores):
        torch.testing.assert_close(by_ids, by_embeds, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", [{"num_beams": 2}, {"do_sample": True, "top_k": 5}], ids=["beam", "sample"])
def test_static_cache_equals_dynamic_cache_beyond_greedy(tiny_mage, batch, mode):
    model, _ = tiny_mage
    outputs = []
    for cache in ("dynamic", "static"):
        torch.manual_seed(0)
        outputs.append(_generate(model, batch, cache_implementation=cache, **mode))
    assert _new_tokens(outputs[0], batch) == _new_tokens(outputs[1], batch)


def test_left_padding_leaves_the_last_logits_unchanged(tiny_mage, single):
    """LLaVA's `test_left_padding_compatibility`: extra left padding (masked out, positions from the mask) does not
    change the next-token logits."""
    model, processor = tiny_mage
    pad = processor.tokenizer.pad_token_id
    ids, mask = single["input_ids"], single["attention_mask"]
    padded_ids = torch.cat([torch.full((1, 5), pad), ids], dim=1)
    padded_mask = torch.cat([torch.zeros(1, 5, dtype=mask.dtype), mask], dim=1)
    position_ids = (padded_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        plain = model(**single).logits[:, -1]
        padded = model(
            input_ids=padded_ids,
            attention_mask=padded_mask,
            pixel_values=single["pixel_values"],
            position_ids=position_ids,
        ).logits[:, -1]
    torch.testing.assert_close(padded, plain, rtol=1e-4, atol=1e-4)


def test_placeholders_without_pixel_values_are_ordinary_tokens(tiny_mage, single):
    """A prompt holding placeholders but given no images (a text-only call, a candidate step) runs as LLaVA does:
    the placeholders are embedded like any token, so the result equals passing those embeddings explicitly."""
    model, _ = tiny_mage
    text_only = {k: v for k, v in single.items() if k != "pixel_values"}
    with torch.no_grad():
        by_ids = model(**text_only).logits
        by_embeds = model(
            inputs_embeds=model.get_input_embeddings()(text_only["input_ids"]),
            attention_mask=text_only["attention_mask"],
        ).logits
        with_image = model(**single).logits
    torch.testing.assert_close(by_ids, by_embeds)
    assert not torch.allclose(by_ids, with_image), "the image must change the logits"
    output = _generate(model, text_only)
    assert output.sequences.shape[1] == text_only["input_ids"].shape[1] + NEW_TOKENS


def test_return_dict_false_is_the_output_as_a_tuple(tiny_mage, single):
    """`return_dict=False` returns `ModelOutput.to_tuple()`, field by field, for both model classes."""
    model, _ = tiny_mage
    with torch.no_grad():
        for module in (model, model.model):
            as_dict = module(**single, return_dict=True, output_hidden_states=True)
            as_tuple = module(**single, return_dict=False, output_hidden_states=True)
            assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict.to_tuple())
            for name, value, item in zip(as_dict.keys(), as_dict.to_tuple(), as_tuple):
                if isinstance(value, torch.Tensor):
                    torch.testing.assert_close(item, value, msg=name)
                else:
                    assert type(item) is type(value), name


def test_get_image_features_output_and_tuple_agree(tiny_mage, single):
    """`get_image_features`: on 5.x the default is LLaVA's `BaseModelOutputWithPooling` (projected tokens in
    `pooler_output`), equal to `return_dict=True`; its tuple holds the same tokens; asking for the tower's hidden
    states returns the output object with `num_layers + 1` of them."""
    model, _ = tiny_mage
    pixels = single["pixel_values"]
    with torch.no_grad():
        tokens = model.get_image_features(pixels).pooler_output
        output = model.get_image_features(pixel_values=pixels, return_dict=True)
        as_tuple = model.get_image_features(pixel_values=pixels, return_dict=False)
        with_states = model.get_image_features(pixels, output_hidden_states=True)
    assert tokens.shape == (1, model.config.image_seq_length, model.config.text_config.hidden_size)
    torch.testing.assert_close(output.pooler_output, tokens)
    torch.testing.assert_close(as_tuple[1], tokens)
    assert output.last_hidden_state.shape[-1] == model.config.vision_config.hidden_size
    assert output.hidden_states is None and output.attentions is None
    assert len(with_states.hidden_states) == model.config.vision_config.num_hidden_layers + 1
    torch.testing.assert_close(with_states.pooler_output, tokens)


def test_sequence_past_max_positions_warns_and_runs(tiny_mage):
    """No length guard raises (LLaVA has none); past `max_position_embeddings` with unscaled RoPE it warns once."""
    from transformers.testing_utils import CaptureLogger

    from modeling_mage.modeling_mage import logger

    model, _ = tiny_mage
    limit = model.config.text_config.max_position_embeddings
    ids = torch.full((1, limit + 3), 5)
    with CaptureLogger(logger) as captured, torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape[1] == limit + 3
    assert f"max_position_embeddings={limit}" in captured.out
