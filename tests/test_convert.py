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
from mage_testing.tiny import tiny_image_processor, train_tokenizer
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


def _error_lines(capsys) -> list[str]:
    """The CLI's own lines on stderr (transformers' loading progress bars aside)."""
    return [line for line in capsys.readouterr().err.split("\n") if line.startswith("mage convert")]


def _tree(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_llava_hf_refuses_a_non_empty_out_and_overwrite_replaces_it(tiny_llava_dir, tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "README.md").write_text("an older model's card")
    (out / "model.safetensors").write_bytes(b"older weights")
    before = _tree(out)
    assert main(["convert", "llava-hf", str(tiny_llava_dir), "--out", str(out)]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and err[0].startswith("mage convert: error:") and "--overwrite" in err[0], err
    assert _tree(out) == before  # nothing written
    assert main(["convert", "llava-hf", str(tiny_llava_dir), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "README.md").exists(), "the replaced model's card must not stay beside the new weights"
    MageForConditionalGeneration.from_pretrained(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], "no partial or replaced folder is left behind"


def test_llava_hf_refuses_a_checkpoint_that_is_not_llava(tiny_mage_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", "llava-hf", str(tiny_mage_dir), "--out", str(out)]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "model_type 'mage'" in err[0], err
    assert not out.exists()


def test_llava_hf_refuses_weights_that_do_not_load(tiny_llava_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    source = tmp_path / "llava-without-projector"
    source.mkdir()
    for path in tiny_llava_dir.iterdir():
        (source / path.name).write_bytes(path.read_bytes())
    state = load_file(source / "model.safetensors")
    save_file(
        {k: v for k, v in state.items() if "multi_modal_projector" not in k},
        source / "model.safetensors",
        metadata={"format": "pt"},
    )
    assert main(["convert", "llava-hf", str(source), "--out", str(tmp_path / "out")]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "missing keys" in err[0] and "multi_modal_projector" in err[0], err
    assert not (tmp_path / "out").exists()


def test_llava_hf_missing_source_is_one_line(tmp_path, capsys):
    assert main(["convert", "llava-hf", str(tmp_path / "nonexistent"), "--out", str(tmp_path / "out")]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "no such folder" in err[0], err


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
