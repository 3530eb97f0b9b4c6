"""MAGE processor. Importing this package registers it with `AutoProcessor` in-process."""

from .processing_mage import (
    IMAGE_TOKEN,
    VICUNA_V1_CHAT_TEMPLATE,
    VICUNA_V1_SYSTEM_PROMPT,
    MageProcessor,
    prepare_tokenizer,
    vicuna_v1_chat_template,
)


def register_mage_processor() -> None:
    """Register `MageProcessor` for AutoProcessor (in-process) and for remote code (`auto_map` on save)."""
    from transformers import AutoProcessor

    from modeling_mage import MageConfig

    AutoProcessor.register(MageConfig, MageProcessor, exist_ok=True)
    MageProcessor.register_for_auto_class("AutoProcessor")


register_mage_processor()

__all__ = [
    "MageProcessor",
    "IMAGE_TOKEN",
    "VICUNA_V1_CHAT_TEMPLATE",
    "VICUNA_V1_SYSTEM_PROMPT",
    "prepare_tokenizer",
    "vicuna_v1_chat_template",
]
