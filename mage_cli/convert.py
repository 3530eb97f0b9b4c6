"""Build or convert MAGE checkpoints (safetensors only).

    mage convert init --vision openai/clip-vit-large-patch14-336 --text lmsys/vicuna-7b-v1.5 --out mage-7b-init \\
        [--projector ian --num-query-tokens 144] [--dtype bfloat16] [--max-shard-size 5GB]
    mage convert llava-hf llava-hf/llava-1.5-7b-hf --out mage-from-llava [--projector mlp2x_gelu|ian]

An `--out` folder that already holds files is refused unless `--overwrite` is given; the checkpoint is written to a
hidden folder beside it and renamed into place at the end, so a crash never leaves half a model.

`init` is the stage-1 starting point (pretrained tower + pretrained LM + a fresh projector). `llava-hf` turns a
transformers LLaVA checkpoint into a MAGE checkpoint: with `--projector mlp2x_gelu` (default) the LLaVA projector is
copied and the outputs are identical; with `--projector ian` the tower and the LM are kept and a fresh IAN starts.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from training import outputs

DTYPES = ("float32", "bfloat16", "float16")


INIT_HELP = "CLIP/SigLIP + causal LM → a MAGE checkpoint with a fresh projector"
LLAVA_HELP = "a transformers LLaVA checkpoint → a MAGE checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the examples' lines
    sub = parser.add_subparsers(dest="conversion", required=True, metavar="CONVERSION")
    init = sub.add_parser(
        "init",
        help=INIT_HELP,
        description=f"{INIT_HELP}.\n\n  mage convert init --vision openai/clip-vit-large-patch14-336 "
        "--text lmsys/vicuna-7b-v1.5 --out mage-7b-init",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("--vision", required=True, help="vision tower: a CLIP/SigLIP folder or Hub id")
    init.add_argument("--text", required=True, help="causal LM: a folder or Hub id (its tokenizer is used)")
    _common(init, default_projector="ian")
    llava = sub.add_parser(
        "llava-hf",
        help=LLAVA_HELP,
        description=f"{LLAVA_HELP} (projector copied: identical outputs; --projector ian starts a fresh IAN).\n\n"
        "  mage convert llava-hf llava-hf/llava-1.5-7b-hf --out mage-from-llava",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    llava.add_argument("source", help="LlavaForConditionalGeneration folder or Hub id")
    _common(llava, default_projector="mlp2x_gelu")


def _common(parser: argparse.ArgumentParser, default_projector: str) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--projector", default=default_projector, choices=("ian", "mlp2x_gelu", "linear"))
    parser.add_argument("--num-query-tokens", type=int, default=144, help="Q for the IAN (a perfect square)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype of the saved weights")
    parser.add_argument("--max-shard-size", default="5GB", help="safetensors shard size, e.g. 2GB")
    parser.add_argument("--overwrite", action="store_true", help="replace what an existing --out folder holds")


class ConvertError(ValueError):
    """A source that cannot be converted, or an output folder that must not be written; the message says which."""


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse an `out` that is a file, or a folder that holds anything, unless `overwrite`."""
    outputs.check_output_dir(out, overwrite, flag="--out")


def _dtype(name: str):
    import torch  # heavy

    return getattr(torch, name)


def convert_init(
    vision: str,
    text: str,
    out: Path,
    projector: str = "ian",
    num_query_tokens: int = 144,
    dtype: str = "float32",
    max_shard_size: str = "5GB",
    overwrite: bool = False,
) -> Path:
    """Stage-1 starting point from a pretrained tower and LM; writes model + processor + remote code to `out`
    (refused when `out` holds files, unless `overwrite`)."""
    check_output_dir(out, overwrite)
    from modeling_mage import MageForConditionalGeneration  # heavy
    from processing_mage import MageProcessor  # heavy

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
    return _save(model, processor, out, max_shard_size, overwrite)


def _probe_processor_tokens(vision: str, text: str, projector: str, num_query_tokens: int) -> int:
    from transformers import AutoConfig  # heavy

    from modeling_mage import MageConfig  # heavy

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
    overwrite: bool = False,
) -> Path:
    """A transformers `LlavaForConditionalGeneration` checkpoint → MAGE (same outputs with `mlp2x_gelu`).

    Refuses a source whose `model_type` is not `"llava"` or whose weights do not all load into LLaVA (a weight left
    at its random initialisation would be reported as converted), and an `out` that holds files unless `overwrite`.
    """
    import torch  # heavy
    from transformers import AutoProcessor, LlavaForConditionalGeneration, PretrainedConfig  # heavy

    from modeling_mage import MageConfig, MageForConditionalGeneration  # heavy
    from processing_mage import MageProcessor  # heavy

    check_output_dir(out, overwrite)
    if not Path(source).exists() and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        raise ConvertError(f"{source}: no such folder.")
    model_type = PretrainedConfig.get_config_dict(source)[0].get("model_type")
    if model_type != "llava":
        raise ConvertError(
            f"{source}: config.json has model_type {model_type!r}; `convert llava-hf` reads transformers LLaVA "
            "checkpoints (model_type 'llava')."
        )
    llava, info = LlavaForConditionalGeneration.from_pretrained(source, dtype=_dtype(dtype), output_loading_info=True)
    problems = {kind: sorted(info.get(kind) or []) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(problems.values()):
        details = "; ".join(f"{kind.replace('_', ' ')}: {keys[:6]}" for kind, keys in problems.items() if keys)
        raise ConvertError(
            f"{source}: its weights do not load into LLaVA as they are ({details}); nothing was written."
        )
    llava_config = llava.config
    if not isinstance(llava_config.vision_feature_layer, int):
        raise ConvertError(
            f"{source}: vision_feature_layer={llava_config.vision_feature_layer!r}; MAGE supports one layer (an int)."
        )
    if projector == "mlp2x_gelu" and not getattr(llava_config, "multimodal_projector_bias", True):
        raise ConvertError(f"{source}: a LLaVA projector without bias cannot be copied; use --projector ian.")
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
        raise ConvertError(
            f"{source}: weights do not map onto MAGE. Missing: {missing[:8]} Unexpected: {unexpected[:8]}"
        )
    with torch.no_grad():
        model.generation_config = llava.generation_config
    llava_processor = AutoProcessor.from_pretrained(source)
    processor = MageProcessor(
        llava_processor.image_processor, llava_processor.tokenizer, num_image_tokens=config.image_seq_length
    )
    return _save(model, processor, out, max_shard_size, overwrite)


def _save(model, processor, out: Path, max_shard_size: str, overwrite: bool) -> Path:
    """Write the checkpoint into a hidden folder beside `out`, then rename it into place (`training.outputs`)."""

    def write(folder: Path) -> None:
        model.save_pretrained(folder, max_shard_size=max_shard_size)
        processor.save_pretrained(folder)

    return outputs.write_folder(out, write, overwrite, flag="--out")


def check_query_tokens(projector: str, num_query_tokens: int) -> None:
    """The IAN lays its queries on a square grid: refuse any other count before anything is downloaded."""
    if projector == "ian" and (num_query_tokens < 1 or math.isqrt(num_query_tokens) ** 2 != num_query_tokens):
        raise ConvertError(
            f"--num-query-tokens {num_query_tokens} is not a perfect square (the IAN's queries form a square grid: "
            "e.g. 64, 144, 256)."
        )


def run(args: argparse.Namespace) -> int:
    options = dict(
        projector=args.projector,
        num_query_tokens=args.num_query_tokens,
        dtype=args.dtype,
        max_shard_size=args.max_shard_size,
        overwrite=args.overwrite,
    )
    try:
        check_query_tokens(args.projector, args.num_query_tokens)
        if args.conversion == "init":
            out = convert_init(args.vision, args.text, args.out, **options)
        else:
            out = convert_llava_hf(args.source, args.out, **options)
    except (ValueError, OSError) as error:  # ConvertError, MageConfig's checks, a missing or unreadable source
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"mage convert: error: {message}", file=sys.stderr)
        return 2
    print(f"wrote {out} (safetensors + remote code + processor); load it with trust_remote_code=True")
    return 0


__all__ = ["ConvertError", "check_output_dir", "check_query_tokens", "convert_init", "convert_llava_hf"]
