"""MageProcessor: placeholder expansion, image/marker agreement, the vicuna_v1 template, bad images, real SentencePiece."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from PIL import Image

from processing_mage import VICUNA_V1_SYSTEM_PROMPT, MageProcessor, prepare_tokenizer

Q = 4


def test_each_image_marker_expands_to_q_placeholders(tiny_mage, shape_image):
    _, processor = tiny_mage
    image_id = processor.image_token_id
    inputs = processor(
        images=[shape_image, shape_image, shape_image],
        text=["<image>\nOne image.", "<image> and <image>: two images."],
        padding=True,
        return_tensors="pt",
    )
    assert set(inputs.keys()) == {"input_ids", "attention_mask", "pixel_values"}  # never token_type_ids
    assert inputs["pixel_values"].shape == (3, 3, 64, 64)
    per_row = (inputs["input_ids"] == image_id).sum(1).tolist()
    assert per_row == [Q, 2 * Q]
    # The placeholders of one image are contiguous.
    row = inputs["input_ids"][0].tolist()
    first = row.index(image_id)
    assert row[first : first + Q] == [image_id] * Q


def test_nested_image_lists_per_text(tiny_mage, shape_image):
    _, processor = tiny_mage
    inputs = processor(
        images=[[shape_image], [shape_image, shape_image]], text=["<image> a", "<image><image> b"], padding=True
    )
    assert inputs["pixel_values"].shape[0] == 3
    with pytest.raises(ValueError, match="Text 0 has 1 '<image>' marker"):
        processor(images=[[shape_image, shape_image], [shape_image]], text=["<image> a", "<image><image> b"])


@pytest.mark.parametrize(
    ("images", "text", "message"),
    [
        (None, "<image> what?", r"holds 1 '<image>' marker\(s\) .* but 0 image\(s\) were given"),
        ("two", "<image> what?", r"holds 1 '<image>' marker\(s\) .* but 2 image\(s\) were given"),
        ("one", "what?", r"holds 0 '<image>' marker\(s\) .* but 1 image\(s\) were given"),
    ],
)
def test_image_count_mismatch_is_a_clear_error(tiny_mage, shape_image, images, text, message):
    _, processor = tiny_mage
    images = {"one": [shape_image], "two": [shape_image, shape_image], None: None}[images]
    with pytest.raises(ValueError, match=message):
        processor(images=images, text=text)
    with pytest.raises(ValueError, match="needs `text`"):
        processor(images=[shape_image])


def test_truncation_through_placeholders_is_refused(tiny_mage, shape_image):
    _, processor = tiny_mage
    with pytest.raises(ValueError, match=r"expected 1 × 4 image placeholder tokens .* found 2"):
        processor(images=[shape_image], text="<image> what is it?", truncation=True, max_length=3)
    # Truncating only text after the image is fine.
    inputs = processor(images=[shape_image], text="<image>" + " what is it?" * 5, truncation=True, max_length=8)
    assert inputs["input_ids"].shape[1] == 8


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGBA", (64, 64), (255, 0, 0, 128)),
        Image.new("L", (64, 64), 200),
        Image.new("P", (64, 64)),
        Image.new("RGB", (3, 2), (1, 2, 3)),
        Image.new("RGB", (2000, 1200), (1, 2, 3)),
    ],
    ids=["rgba", "grayscale", "palette", "tiny", "huge"],
)
def test_any_mode_and_size_becomes_rgb_at_the_tower_size(tiny_mage, image):
    _, processor = tiny_mage
    pixel_values = processor(images=[image], text="<image>")["pixel_values"]
    assert pixel_values.shape == (1, 3, 64, 64) and torch.isfinite(pixel_values).all()


def test_rgba_is_handled_like_its_rgb_conversion(tiny_mage):
    _, processor = tiny_mage
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 128))
    a = processor(images=[rgba], text="<image>")["pixel_values"]
    b = processor(images=[rgba.convert("RGB")], text="<image>")["pixel_values"]
    torch.testing.assert_close(a, b)


def test_chat_template_is_exactly_vicuna_v1(tiny_mage):
    _, processor = tiny_mage
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "What shape is it?"}, {"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A circle."}]},
        {"role": "user", "content": "Which colour?"},
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == (
        VICUNA_V1_SYSTEM_PROMPT
        + " USER: <image>\nWhat shape is it? ASSISTANT: A circle.</s>USER: Which colour? ASSISTANT:"
    )
    with_system = processor.apply_chat_template(
        [{"role": "system", "content": "You plan tools."}, {"role": "user", "content": "Draw."}],
        add_generation_prompt=False,
    )
    assert with_system == "You plan tools. USER: Draw. "


def test_chat_template_tokenizes_to_a_dict(tiny_mage, shape_image):
    _, processor = tiny_mage
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    batch = processor(images=[shape_image], text=prompt, return_tensors="pt")
    assert (batch["input_ids"] == processor.image_token_id).sum() == Q
    assert processor.decode(batch["input_ids"][0], skip_special_tokens=True).endswith("ASSISTANT:")


def test_tokenizer_without_image_token_is_refused(tiny_mage):
    from mage_testing.tiny import SPECIAL_TOKENS, train_tokenizer

    _, processor = tiny_mage
    tokenizer = train_tokenizer([])
    assert "<image>" in SPECIAL_TOKENS
    with pytest.raises(ValueError, match="has no '<img>' token"):
        MageProcessor(processor.image_processor, tokenizer, num_image_tokens=Q, image_token="<img>")


@pytest.fixture(scope="module")
def sentencepiece_dir(tmp_path_factory):
    """The real Llama-family SentencePiece model shipped in the mistral-common wheel (docs/training.md, masking)."""
    mistral_common = pytest.importorskip("mistral_common")
    pytest.importorskip("sentencepiece")
    source = os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1")
    folder = tmp_path_factory.mktemp("sentencepiece")
    shutil.copy(source, folder / "tokenizer.model")
    return folder


def test_real_sentencepiece_tokenizer(sentencepiece_dir, tiny_mage, shape_image, tmp_path):
    from transformers import AutoProcessor, LlamaTokenizer

    _, tiny_processor = tiny_mage
    tokenizer = LlamaTokenizer.from_pretrained(sentencepiece_dir)
    prepare_tokenizer(tokenizer)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert image_id == 32000 and tokenizer.pad_token == "<unk>"
    processor = MageProcessor(tiny_processor.image_processor, tokenizer, num_image_tokens=Q)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}],
        add_generation_prompt=True,
    )
    ids = processor(images=[shape_image], text=prompt)["input_ids"][0].tolist()
    assert ids[0] == tokenizer.bos_token_id  # BOS decided: always prepended
    assert ids.count(image_id) == Q
    assert tokenizer.convert_ids_to_tokens([ids[ids.index(image_id) + Q]]) == ["<0x0A>"]  # "\n" right after the image
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert reloaded(images=[shape_image], text=prompt)["input_ids"][0].tolist() == ids


def test_apply_chat_template_tokenize_return_dict_like_llava_hf(tiny_mage, shape_image):
    model, processor = tiny_mage
    messages = [{"role": "user", "content": [{"type": "image", "image": shape_image}, {"type": "text", "text": "Hi?"}]}]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert set(inputs.keys()) == {"input_ids", "attention_mask", "pixel_values"}
    assert (inputs["input_ids"] == processor.image_token_id).sum() == Q
    expected = processor(images=[shape_image], text=processor.apply_chat_template(messages, add_generation_prompt=True))
    assert inputs["input_ids"].tolist() == expected["input_ids"].tolist()
    torch.testing.assert_close(inputs["pixel_values"], expected["pixel_values"])
