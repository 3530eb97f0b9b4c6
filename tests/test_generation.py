"""Generation: batched left padding equals one-by-one, static cache equals dynamic, compiled static path, 4-bit."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image, ImageDraw

from modeling_mage import MageForConditionalGeneration
from processing_mage import MageProcessor

QUESTIONS = ["What is it?", "Which colour is the big square in the middle?", "Count."]


def _images():
    images = []
    for index, colour in enumerate([(200, 10, 10), (10, 200, 10), (10, 10, 200)]):
        image = Image.new("RGB", (64, 64), (120, 120, 120))
        ImageDraw.Draw(image).ellipse([4 + 8 * index, 4, 40, 40 + 6 * index], fill=colour)
        images.append(image)
    return images


def _prompt(processor, question):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


@pytest.fixture()
def left_padded(tiny_mage):
    model, processor = tiny_mage
    processor = copy.deepcopy(processor)
    processor.tokenizer.padding_side = "left"
    return model, processor


def _greedy(model, inputs, **kwargs):
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=8, do_sample=False, min_new_tokens=8, **kwargs)


def test_batched_left_padded_generation_equals_one_by_one(left_padded):
    model, processor = left_padded
    images, prompts = _images(), [_prompt(processor, q) for q in QUESTIONS]
    batch = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    assert (batch["attention_mask"][:, 0] == 0).any()  # really left-padded
    batched = _greedy(model, batch)[:, batch["input_ids"].shape[1] :]
    for row, (image, prompt) in enumerate(zip(images, prompts)):
        single = processor(images=[image], text=[prompt], return_tensors="pt")
        alone = _greedy(model, single)[:, single["input_ids"].shape[1] :]
        assert batched[row].tolist() == alone[0].tolist(), f"row {row}"


def test_static_cache_equals_dynamic_cache(left_padded):
    model, processor = left_padded
    batch = processor(images=_images()[:2], text=[_prompt(processor, q) for q in QUESTIONS[:2]], padding=True)
    dynamic = _greedy(model, batch)
    static = _greedy(model, batch, cache_implementation="static")
    assert dynamic.tolist() == static.tolist()


@pytest.mark.slow
def test_compiled_static_cache_generation_matches_eager(left_padded):
    model, processor = left_padded
    model = copy.deepcopy(model)
    batch = processor(images=_images()[:1], text=[_prompt(processor, QUESTIONS[0])], padding=True)
    eager = _greedy(model, batch)
    model.forward = torch.compile(model.forward, dynamic=False)
    compiled = _greedy(model, batch, cache_implementation="static")
    assert eager.tolist() == compiled.tolist()


def test_generate_without_pixel_values_for_text_only_prompts(tiny_mage):
    model, processor = tiny_mage
    inputs = processor(text=["USER: hello ASSISTANT:"], return_tensors="pt")
    output = _greedy(model, inputs)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 8


def test_4bit_loading_keeps_tower_projector_and_head_unquantised(tiny_mage_dir, tiny_mage):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig

    from modeling_mage import QUANTIZATION_SKIP_MODULES, MageForConditionalGeneration

    _, processor = tiny_mage
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.float32,
        llm_int8_skip_modules=QUANTIZATION_SKIP_MODULES,
    )
    model = MageForConditionalGeneration.from_pretrained(tiny_mage_dir, quantization_config=config, device_map="cpu")
    quantised = {name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)}
    assert any(".language_model.layers.0.self_attn.q_proj" in name for name in quantised)
    assert not any(part in name for name in quantised for part in QUANTIZATION_SKIP_MODULES)
    assert type(model.lm_head) is torch.nn.Linear
    batch = processor(images=_images()[:1], text=[_prompt(processor, QUESTIONS[0])])
    output = _greedy(model, batch)
    assert output.shape[1] == batch["input_ids"].shape[1] + 8


def test_kv_cache_under_either_name_continues_the_prompt(tiny_mage):
    """transformers 5.24 renamed `past_key_values` → `cache`: a manual prefill + one decode step gives the same next
    logits as one forward over the whole sequence, with the cache passed under either name; both at once is refused."""
    from modeling_mage.modeling_mage import CACHE_NAME

    model, processor = tiny_mage
    inputs = processor(images=_images()[:1], text=[_prompt(processor, QUESTIONS[0])], return_tensors="pt")
    ids = inputs["input_ids"]
    with torch.no_grad():
        whole = model(**inputs).logits[:, -1]
        for name in ("cache", "past_key_values"):
            prefill = model(input_ids=ids[:, :-1], pixel_values=inputs["pixel_values"], use_cache=True)
            cache = getattr(prefill, CACHE_NAME)
            assert cache is not None and cache.get_seq_length() == ids.shape[1] - 1
            step = model(input_ids=ids[:, -1:], use_cache=True, **{name: cache})
            torch.testing.assert_close(step.logits[:, -1], whole, rtol=1e-4, atol=1e-5)
        with pytest.raises(ValueError, match="not both"):
            model(input_ids=ids[:, -1:], cache=cache, past_key_values=copy.deepcopy(cache))


def test_saved_processor_pads_left_so_batched_generation_equals_single(tiny_mage_dir):
    """The processor as a user loads it, with no padding side set by hand (llava-hf saves "left" too)."""
    model = MageForConditionalGeneration.from_pretrained(tiny_mage_dir).eval()
    processor = MageProcessor.from_pretrained(tiny_mage_dir)
    assert processor.tokenizer.padding_side == "left"
    images, prompts = _images()[:2], [_prompt(processor, q) for q in QUESTIONS[:2]]
    batch = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    assert (batch["attention_mask"][:, 0] == 0).any(), "the prompts must differ in length for this test"
    batched = _greedy(model, batch)[:, batch["input_ids"].shape[1] :]
    for row, (image, prompt) in enumerate(zip(images, prompts)):
        single = processor(images=[image], text=[prompt], return_tensors="pt")
        assert batched[row].tolist() == _greedy(model, single)[0, single["input_ids"].shape[1] :].tolist(), row
