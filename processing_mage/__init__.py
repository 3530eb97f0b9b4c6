"""MAGE processor. Importing this package registers it with `AutoProcessor` in-process."""

from transformers import AutoProcessor

from modeling_mage import MageConfig

from . import processing_mage as _processing_mage
from .processing_mage import *  # noqa: F403 (the public names, listed once: in processing_mage.py's `__all__`)
from .processing_mage import MageProcessor


def register_mage_processor() -> None:
    """Register `MageProcessor` for AutoProcessor (in-process) and for remote code (`auto_map` on save)."""
    AutoProcessor.register(MageConfig, MageProcessor, exist_ok=True)
    MageProcessor.register_for_auto_class("AutoProcessor")


register_mage_processor()

__all__ = list(_processing_mage.__all__)
