"""Tiny random MAGE models built offline: tiny CLIP + tiny Llama configs and a tokenizer trained on the fly.

Used by the demo and the tests; nothing is downloaded. Sizes (docs/DECISIONS.md, Tooling): 64-px images, patch 16 →
16 patches, a 64-wide 2-layer tower, a 128-wide 2-layer LM — small enough to train on ShapeWorld on a 2-core CPU in
minutes.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, PreTrainedTokenizerFast

from modeling_mage import MageConfig, MageForConditionalGeneration
from processing_mage import IMAGE_TOKEN, VICUNA_V1_SYSTEM_PROMPT, MageProcessor, vicuna_v1_chat_template

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]

# Enough text to cover the chat template when the caller passes no corpus of its own.
DEFAULT_CORPUS = [
    VICUNA_V1_SYSTEM_PROMPT,
    "USER: What is in the image? ASSISTANT: A red circle and a blue square.",
    "Answer the question using a single word or phrase. Yes. No.",
    "Answer with the option's letter from the given choices directly. A. B. C. D.",
]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1000):
    """A byte-level BPE tokenizer (no unknown characters), trained on `texts`, with `<s>` prepended like Llama.

    Returns a `PreTrainedTokenizerFast` holding `<unk> <s> </s> <pad> <image>` as special tokens.
    """
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts) + DEFAULT_CORPUS, trainer=trainer)
    bos_id = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=[IMAGE_TOKEN],
        model_max_length=1024,
        padding_side="left",  # batched generation, as llava-hf saves it; training pads on its own
    )


def tiny_image_processor(image_size: int = 64):
    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
    )


def tiny_config(
    tokenizer,
    image_size: int = 64,
    num_query_tokens: int = 4,
    projector_type: str = "ian",
    vision_hidden_size: int = 64,
    vision_intermediate_size: int | None = None,
    vision_layers: int = 2,
    text_hidden_size: int = 128,
    text_intermediate_size: int | None = None,
    text_layers: int = 2,
    text_heads: int = 4,
    text_kv_heads: int = 2,
    **overrides,
):
    """A `MageConfig` of a small CLIP tower (patch 16) and a small Llama whose vocabulary is `tokenizer`'s.

    Defaults are the tiny sizes (docs/DECISIONS.md, Tooling); the size arguments build the larger test/benchmark
    shapes.
    Intermediate sizes default to twice the width. `overrides` go to `MageConfig` (SEB settings, ITDM, …).
    """
    vision_config = CLIPVisionConfig(
        hidden_size=vision_hidden_size,
        intermediate_size=vision_intermediate_size or 2 * vision_hidden_size,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=16,
        projection_dim=vision_hidden_size,
    )
    text_config = LlamaConfig(
        hidden_size=text_hidden_size,
        intermediate_size=text_intermediate_size or 2 * text_hidden_size,
        num_hidden_layers=text_layers,
        num_attention_heads=text_heads,
        num_key_value_heads=text_kv_heads,
        vocab_size=len(tokenizer),
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    settings = {"seb_num_heads": 4, "seb_hidden_size": vision_hidden_size, "seb_num_layers": 1}
    settings.update(overrides)
    return MageConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        projector_type=projector_type,
        num_query_tokens=num_query_tokens,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **settings,
    )


def build_tiny_mage(
    texts: Iterable[str] = (),
    image_size: int = 64,
    num_query_tokens: int = 4,
    projector_type: str = "ian",
    seed: int = 0,
    vocab_size: int = 1000,
    system_prompt: str = VICUNA_V1_SYSTEM_PROMPT,
    **overrides,
):
    """A tiny random `(MageForConditionalGeneration, MageProcessor)` pair, deterministic from `seed`.

    `system_prompt` is the chat template's default system message (LLaVA's by default; the demo uses a short one,
    since LLaVA's is half of every short ShapeWorld row). `overrides` go to `tiny_config` (size arguments or
    `MageConfig` fields)."""
    texts = list(texts) + ([system_prompt] if system_prompt != VICUNA_V1_SYSTEM_PROMPT else [])
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    config = tiny_config(tokenizer, image_size, num_query_tokens, projector_type, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MageForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    processor = MageProcessor(
        tiny_image_processor(image_size),
        tokenizer,
        num_image_tokens=config.image_seq_length,
        chat_template=vicuna_v1_chat_template(system_prompt),
    )
    return model.eval(), processor


__all__ = ["build_tiny_mage", "train_tokenizer", "tiny_config", "tiny_image_processor"]
