"""What a stored prediction depends on, as hashes: the model it came from and the record (question + image) it answers.

`mage eval` resumes a predictions file only when these still match: a file made by another model is refused, and a
row whose question or image changed since it was written (another `--data` folder, a fixed image) is predicted again.
"""

from __future__ import annotations

import hashlib
import json
import os

from .records import EvalRecord

# The files `from_pretrained` reads for a MAGE checkpoint (weights, configs, tokenizer, chat template, remote code).
# Anything else in the folder (a model card, an earlier evaluation's reports) does not change the predictions.
_MODEL_FILE_SUFFIXES = (".safetensors", ".py", ".jinja", ".model", ".tiktoken", "merges.txt")
_MODEL_JSON_PREFIXES = (
    "config",
    "generation_config",
    "processor_config",
    "preprocessor_config",
    "tokenizer",
    "special_tokens_map",
    "added_tokens",
    "vocab",
    "chat_template",
    "model.safetensors.index",
)
_CHUNK = 1 << 22


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_model_file(name: str) -> bool:
    if name.startswith("."):
        return False
    if name.endswith(".json"):
        return name[: -len(".json")].startswith(_MODEL_JSON_PREFIXES)
    return name.endswith(_MODEL_FILE_SUFFIXES)


def model_fingerprint(model, model_path: str = "") -> str:
    """SHA-256 naming the model's content.

    A local checkpoint folder: the hash of every file `from_pretrained` reads there (weights, configs, tokenizer,
    chat template), so retraining into the same folder changes it. Otherwise (a model built in memory): the hash of
    its parameters and buffers.
    """
    digest = hashlib.sha256()
    if model_path and os.path.isdir(model_path):
        for name in sorted(os.listdir(model_path)):
            path = os.path.join(model_path, name)
            if os.path.isfile(path) and _is_model_file(name):
                digest.update(f"{name}\0{_file_digest(path)}\0".encode())
        return digest.hexdigest()
    import torch  # heavy

    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}\0{data.dtype}\0{tuple(data.shape)}\0".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def record_key(record: EvalRecord) -> str:
    """SHA-256 of what the model sees and is scored against for one record: the question, options, hint, answer and
    the image's bytes. A missing or unreadable image hashes as such, so fixing it changes the key."""
    digest = hashlib.sha256()
    fields = [record.benchmark, record.uid, record.question, record.answer, record.subtask, record.options, record.hint]
    digest.update(json.dumps(fields, ensure_ascii=False, sort_keys=True).encode())
    if record.image_bytes is not None:
        digest.update(record.image_bytes)
    elif record.image_path is not None:
        try:
            digest.update(_file_digest(record.image_path).encode())
        except OSError as error:
            digest.update(f"unreadable:{type(error).__name__}".encode())
    return digest.hexdigest()


__all__ = ["model_fingerprint", "record_key"]
