"""LoRA / QLoRA for MAGE through PEFT, and merging an adapter back into a plain MAGE checkpoint.

- LoRA targets the language model only (the regex in docs/training.md, "LoRA / QLoRA"; `"all-linear"` would also
  hit the vision tower);
  the projector is trained fully through `modules_to_save`.
- QLoRA loads the model in 4 bit (NF4) with `llm_int8_skip_modules` = vision tower, projector and `lm_head`
  (prefixes from the root: bitsandbytes on 5.x replaces its defaults by this list), then
  `prepare_model_for_kbit_training` and the same LoRA.
- `merge_lora` loads the base in full precision, applies the adapter, merges and saves a plain MAGE folder
  (safetensors, remote code, processor) that loads through the Auto classes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import BitsAndBytesConfig

from modeling_mage import QUANTIZATION_SKIP_MODULES, MageForConditionalGeneration
from processing_mage import MageProcessor

from .checkpoint import check_mage_checkpoint
from .outputs import check_output_dir, write_folder

LORA_TARGET_MODULES = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
LORA_MODULES_TO_SAVE = ["multi_modal_projector"]


def lora_config(r: int = 128, alpha: int = 256, dropout: float = 0.05):
    """PEFT `LoraConfig` on the LM's attention and MLP projections, projector fully trained."""
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=LORA_TARGET_MODULES,
        modules_to_save=list(LORA_MODULES_TO_SAVE),
        bias="none",
    )


def quantization_config(compute_dtype: torch.dtype | None = None):
    """4-bit NF4 `BitsAndBytesConfig` that keeps the vision tower, the projector and `lm_head` unquantised."""
    if compute_dtype is None:
        compute_dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=list(QUANTIZATION_SKIP_MODULES),
    )


def apply_lora(
    model,
    r: int = 128,
    alpha: int = 256,
    dropout: float = 0.05,
    quantized: bool = False,
    gradient_checkpointing: bool = False,
):
    """Wrap `model` in a `PeftModel` (after `prepare_model_for_kbit_training` when `quantized`)."""
    if quantized:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    return get_peft_model(model, lora_config(r, alpha, dropout))


def merge_lora(
    adapter_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    base_model: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Merge the adapter in `adapter_dir` into its base MAGE model and save a plain checkpoint in `output_dir`.

    `base_model` defaults to the adapter's `base_model_name_or_path`. The processor is taken from the adapter
    folder (written by `mage train --lora`), else from the base. A non-empty `output_dir` is refused unless
    `overwrite` (`training.outputs.OutputDirError`); the checkpoint is written beside it and renamed into place.
    Returns `output_dir`.
    """
    check_output_dir(Path(output_dir), overwrite)

    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{adapter_dir} holds no adapter_config.json: not a LoRA adapter folder.")
    if base_model is None:
        base_model = json.loads(config_path.read_text()).get("base_model_name_or_path")
        if not base_model or not Path(base_model).is_dir():
            raise FileNotFoundError(
                f"The adapter names base model {base_model!r}, which is not a local folder; pass --base PATH."
            )
    check_mage_checkpoint(base_model)
    model = MageForConditionalGeneration.from_pretrained(base_model, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    processor_source = adapter_dir if (adapter_dir / "processor_config.json").is_file() else Path(base_model)
    processor = MageProcessor.from_pretrained(processor_source)

    def write(folder: Path) -> None:
        merged.save_pretrained(folder)
        processor.save_pretrained(folder)

    return write_folder(Path(output_dir), write, overwrite)


__all__ = ["LORA_TARGET_MODULES", "lora_config", "quantization_config", "apply_lora", "merge_lora"]
