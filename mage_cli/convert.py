"""Build or convert MAGE checkpoints (safetensors only).

    mage convert init --vision openai/clip-vit-large-patch14-336 --text lmsys/vicuna-7b-v1.5 --out mage-7b-init \\
        [--projector ian --num-query-tokens 144] [--dtype bfloat16] [--max-shard-size 5GB]
    mage convert llava-hf llava-hf/llava-1.5-7b-hf --out mage-from-llava [--projector mlp2x_gelu|ian]

`init` is the stage-1 starting point (pretrained tower + pretrained LM + a fresh projector). `llava-hf` turns a
transformers LLaVA checkpoint into a MAGE checkpoint: with `--projector mlp2x_gelu` (default) the LLaVA projector is
copied and the outputs are identical; with `--projector ian` the tower and the LM are kept and a fresh IAN starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DTYPES = ("float32", "bfloat16", "float16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="conversion", required=True, metavar="CONVERSION")
    init = sub.add_parser("init", help="CLIP/SigLIP + causal LM → a MAGE checkpoint with a fresh projector")
    init.add_argument("--vision", required=True, help="vision tower: a CLIP/SigLIP folder or Hub id")
    init.add_argument("--text", required=True, help="causal LM: a folder or Hub id (its tokenizer is used)")
    _common(init, default_projector="ian")
    llava = sub.add_parser("llava-hf", help="a transformers LLaVA checkpoint → a MAGE checkpoint")
    llava.add_argument("source", help="LlavaForConditionalGeneration folder or Hub id")
    _common(llava, default_projector="mlp2x_gelu")


def _common(parser: argparse.ArgumentParser, default_projector: str) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--projector", default=default_projector, choices=("ian", "mlp2x_gelu", "linear"))
    parser.add_argument("--num-query-tokens", type=int, default=144, help="Q for the IAN (a perfect square)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype of the saved weights")
    parser.add_argument("--max-shard-size", default="5GB", help="safetensors shard size, e.g. 2GB")


def _dtype(name: str):
    import torch

    return getattr(torch, name)


def convert_init(
    vision: str,
    text: str,
    out: Path,
    projector: str = "ian",
    num_query_tokens: int = 144,
    dtype: str = "float32",
    max_shard_size: str = "5GB",
) -> Path:
    """Stage-1 starting point from a pretrained tower and LM; writes model + processor + remote code to `out`."""
    from modeling_mage import MageForConditionalGeneration
    from processing_mage import MageProcessor

    probe = _probe_processor_tokens(vision, text, projector, num_query_tokens)
    processor = MageProcessor.from_vision_text_pretrained(vision, text, num_image_tokens=probe)
    model = MageForConditionalGeneration.from_vision_text_pretrained(
        vision,
        text,
        tokenizer=processor.tokenizer,
        torch_dtype=_dtype(dtype),
        projector_type=projector,
        num_query_tokens=num_query_tokens,
    )
    processor.num_image_tokens = model.config.image_seq_length
    return _save(model, processor, out, max_shard_size)


def _probe_processor_tokens(vision: str, text: str, projector: str, num_query_tokens: int) -> int:
    from transformers import AutoConfig

    from modeling_mage import MageConfig

    vision_config = AutoConfig.from_pretrained(vision)
    vision_config = getattr(vision_config, "vision_config", vision_config)
    text_config = AutoConfig.from_pretrained(text)
    config = MageConfig(
        vision_config.to_dict(), text_config.to_dict(), projector_type=projector, num_query_tokens=num_query_tokens
    )
    return config.image_seq_length


def convert_llava_hf(
    source: str,
    out: Path,
    projector: str = "mlp2x_gelu",
    num_query_tokens: int = 144,
    dtype: str = "float32",
    max_shard_size: str = "5GB",
) -> Path:
    """A transformers `LlavaForConditionalGeneration` checkpoint → MAGE (same outputs with `mlp2x_gelu`)."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from modeling_mage import MageConfig, MageForConditionalGeneration
    from processing_mage import MageProcessor

    llava = LlavaForConditionalGeneration.from_pretrained(source, dtype=_dtype(dtype))
    llava_config = llava.config
    if not isinstance(llava_config.vision_feature_layer, int):
        raise ValueError(
            f"{source}: vision_feature_layer={llava_config.vision_feature_layer!r}; MAGE supports one layer (an int)."
        )
    if projector == "mlp2x_gelu" and not getattr(llava_config, "multimodal_projector_bias", True):
        raise ValueError(f"{source}: a LLaVA projector without bias cannot be copied; use --projector ian.")
    config = MageConfig(
        vision_config=llava_config.vision_config.to_dict(),
        text_config=llava_config.text_config.to_dict(),
        image_token_id=llava_config.image_token_id,
        vision_feature_layer=llava_config.vision_feature_layer,
        vision_feature_select_strategy=llava_config.vision_feature_select_strategy,
        projector_type=projector,
        num_query_tokens=num_query_tokens,
        projector_hidden_act=llava_config.projector_hidden_act,
        tie_word_embeddings=llava_config.tie_word_embeddings,
    )
    # A copied LLaVA projector is trained (stages 1 and 2); a fresh IAN is not (training warns on stage 2 then).
    config.mage_trained_stages = [1, 2] if projector == "mlp2x_gelu" else []
    model = MageForConditionalGeneration(config).to(_dtype(dtype))
    state = llava.state_dict()
    if projector != "mlp2x_gelu":
        state = {k: v for k, v in state.items() if ".multi_modal_projector." not in k}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if projector == "mlp2x_gelu" or ".multi_modal_projector." not in k]
    if missing or unexpected:
        raise ValueError(f"{source}: weights do not map onto MAGE. Missing: {missing[:8]} Unexpected: {unexpected[:8]}")
    with torch.no_grad():
        model.generation_config = llava.generation_config
    llava_processor = AutoProcessor.from_pretrained(source)
    processor = MageProcessor(
        llava_processor.image_processor, llava_processor.tokenizer, num_image_tokens=config.image_seq_length
    )
    return _save(model, processor, out, max_shard_size)


def _save(model, processor, out: Path, max_shard_size: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size=max_shard_size)
    processor.save_pretrained(out)
    return out


def run(args: argparse.Namespace) -> int:
    options = dict(
        projector=args.projector,
        num_query_tokens=args.num_query_tokens,
        dtype=args.dtype,
        max_shard_size=args.max_shard_size,
    )
    if args.conversion == "init":
        out = convert_init(args.vision, args.text, args.out, **options)
    else:
        out = convert_llava_hf(args.source, args.out, **options)
    print(f"wrote {out} (safetensors + remote code + processor); load it with trust_remote_code=True")
    return 0


__all__ = ["convert_init", "convert_llava_hf"]
