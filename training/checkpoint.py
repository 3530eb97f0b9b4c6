"""What a MAGE checkpoint folder must hold before it is trained or an adapter is merged into it.

Used by `training.api` (training) and `training.lora` (merging); it imports neither, so neither imports the other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class ModelError(ValueError):
    """The model folder cannot be trained (not a MAGE checkpoint, incompatible options)."""


def check_mage_checkpoint(model_path: str | os.PathLike) -> dict:
    """The checkpoint's config.json as a dict; raises `ModelError` when `model_path` is not a MAGE folder."""
    path = Path(model_path)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{path} is not a MAGE checkpoint: no config.json (build one with `mage convert`).")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("model_type") != "mage":
        raise ModelError(
            f"{path} is not a MAGE checkpoint: config.json has model_type={config.get('model_type')!r}, expected "
            "'mage' (build one from a vision tower + LLM with `mage convert`)."
        )
    if not (path / "tokenizer_config.json").is_file():
        raise ModelError(f"{path} has no processor files (tokenizer_config.json); save the MageProcessor there too.")
    return config


__all__ = ["ModelError", "check_mage_checkpoint"]
