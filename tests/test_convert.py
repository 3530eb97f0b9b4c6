"""`mage convert`: CLIP + LLM init, and llava-hf → MAGE with identical outputs."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from mage_cli.main import main
from mage_cli.tiny import tiny_image_processor, train_tokenizer
from modeling_mage import MageForConditionalGeneration
from processing_mage import MageProcessor

VISION = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=64, patch_size=16
)


@pytest.fixture(scope="module")
def tiny_llava_dir(tmp_path_factory):
    tokenizer = train_tokenizer([], vocab_size=300)
    text = LlamaConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=len(tokenizer),
        max_position_embeddings=256,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION),
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    llava = LlavaForConditionalGeneration(config).eval()
    path = tmp_path_factory.mktemp("llava")
    llava.save_pretrained(path)
    LlavaProcessor(
        image_processor=tiny_image_processor(64),
        tokenizer=tokenizer,
        patch_size=16,
        vision_feature_select_strategy="default",
    ).save_pretrained(path)
    return path


@pytest.mark.parametrize("dtype", ["float32"])
def test_llava_hf_converts_with_identical_outputs(tiny_llava_dir, tmp_path, shape_image, dtype):
    out = tmp_path / "mage"
    assert main(["convert", "llava-hf", str(tiny_llava_dir), "--out", str(out), "--dtype", dtype]) == 0
    mage = MageForConditionalGeneration.from_pretrained(out).eval()
    processor = MageProcessor.from_pretrained(out)
    assert mage.config.projector_type == "mlp2x_gelu" and processor.num_image_tokens == 16
    llava = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir).eval()
    inputs = processor(images=[shape_image], text=["USER: <image>\nWhat is it? ASSISTANT:"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(mage(**inputs).logits, llava(**inputs).logits, rtol=1e-5, atol=1e-5)
        a = mage.generate(**inputs, max_new_tokens=6, do_sample=False)
        b = llava.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert a.tolist() == b.tolist()


def test_llava_hf_with_a_fresh_ian_keeps_tower_and_lm(tiny_llava_dir, tmp_path):
    out = tmp_path / "mage-ian"
    main(
        ["convert", "llava-hf", str(tiny_llava_dir), "--out", str(out), "--projector", "ian", "--num-query-tokens", "4"]
    )
    mage = MageForConditionalGeneration.from_pretrained(out)
    llava = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir)
    assert mage.config.image_seq_length == 4 and MageProcessor.from_pretrained(out).num_image_tokens == 4
    torch.testing.assert_close(mage.lm_head.weight, llava.lm_head.weight)
    torch.testing.assert_close(
        mage.model.vision_tower.encoder.layers[0].mlp.fc1.weight,
        llava.model.vision_tower.encoder.layers[0].mlp.fc1.weight,
    )


def test_init_from_clip_and_llm_with_shards(tmp_path):
    from transformers import CLIPConfig, CLIPModel, LlamaForCausalLM

    tokenizer = train_tokenizer([], vocab_size=300)
    CLIPModel(
        CLIPConfig(
            vision_config=VISION,
            text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
            projection_dim=32,
        )
    ).save_pretrained(tmp_path / "clip")
    tiny_image_processor(64).save_pretrained(tmp_path / "clip")
    LlamaForCausalLM(
        LlamaConfig(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=len(tokenizer),
        )
    ).save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    out = tmp_path / "init"
    main(
        [
            "convert",
            "init",
            "--vision",
            str(tmp_path / "clip"),
            "--text",
            str(tmp_path / "llm"),
            "--out",
            str(out),
            "--num-query-tokens",
            "4",
            "--max-shard-size",
            "300KB",
        ]
    )
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    model = MageForConditionalGeneration.from_pretrained(out)
    processor = MageProcessor.from_pretrained(out)
    assert model.config.image_token_id == processor.image_token_id and processor.num_image_tokens == 4
