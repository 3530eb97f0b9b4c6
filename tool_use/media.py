"""Loading and saving the three modalities a plan moves around, with paths confined to allowed directories.

In memory: text is ``str``, an image is a ``PIL.Image.Image`` (RGB), audio is ``{"array": float32 (N,) in [-1, 1],
"sampling_rate": int}``.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


class PathNotAllowedError(PermissionError):
    """A file named in a plan resolves outside every allowed directory."""


def confine(name: str, allowed_dirs: list[Path]) -> Path:
    """Resolve the file ``name`` inside the first allowed directory that holds it.

    Symlinks and ``..`` are resolved first, then ``Path.resolve().is_relative_to(allowed_dir)`` is checked, so neither
    an absolute path nor ``../`` nor a symlink can reach outside. Raises :class:`PathNotAllowedError` when the path
    escapes, ``FileNotFoundError`` (naming the directories searched) when no allowed directory has the file.
    """
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise PathNotAllowedError(f"not a file name: {name!r}")
    escaped = []
    for base in allowed_dirs:
        base = Path(base).resolve()
        candidate = (base / name.strip()).resolve()
        if not candidate.is_relative_to(base):
            escaped.append(str(base))
            continue
        if candidate.is_file():
            return candidate
    if escaped:  # outside one allowed folder and a file in none: say it escapes, not that it is missing
        raise PathNotAllowedError(f"file {name!r} resolves outside the allowed directories {escaped}")
    raise FileNotFoundError(f"file {name!r} not found in the allowed directories {[str(d) for d in allowed_dirs]}")


def load_image(path: Path):
    """Open an image file as RGB (fully loaded, file closed)."""
    with Image.open(path) as img:
        return img.convert("RGB")


def load_audio(path: Path) -> dict[str, Any]:
    """Read a PCM WAV file (8/16/32-bit, mono or mixed down) as ``{"array", "sampling_rate"}``."""
    if path.suffix.lower() != ".wav":
        raise ValueError(f"{path.name}: only .wav audio is read without extra dependencies, got {path.suffix!r}")
    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        frames = w.readframes(w.getnframes())
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}.get(width)
    if dtype is None:
        raise ValueError(f"{path.name}: unsupported sample width {width} bytes (expected 1, 2 or 4)")
    data = np.frombuffer(frames, dtype=dtype).astype(np.float32)
    data = (data - 128.0) / 128.0 if width == 1 else data / float(np.iinfo(dtype).max)
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1)
    return {"array": data, "sampling_rate": int(rate)}


def save_audio(audio: dict[str, Any], path: Path) -> None:
    """Write ``{"array", "sampling_rate"}`` as 16-bit mono PCM WAV (values clipped to [-1, 1])."""
    data = np.asarray(audio["array"], dtype=np.float32).reshape(-1)
    pcm = (np.clip(data, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(audio["sampling_rate"]))
        w.writeframes(pcm.tobytes())


def check_modality(value: Any, modality: str) -> str | None:
    """``None`` when ``value`` is a valid in-memory ``modality`` value, else a message saying what it is."""
    if modality == "text":
        return None if isinstance(value, str) else f"expected text (str), got {type(value).__name__}"
    if modality == "image":
        return None if isinstance(value, Image.Image) else f"expected a PIL image, got {type(value).__name__}"
    if modality == "audio":
        ok = isinstance(value, dict) and "array" in value and "sampling_rate" in value
        return None if ok else f"expected audio {{'array', 'sampling_rate'}}, got {type(value).__name__}"
    return f"unknown modality {modality!r}"


def save_output(value: Any, modality: str, stem: Path) -> Path:
    """Write a step output to ``stem`` + the modality's suffix (.txt, .png, .wav, appended); return the path."""
    if modality == "text":
        path = stem.parent / (stem.name + ".txt")
        path.write_text(value, encoding="utf-8")
    elif modality == "image":
        path = stem.parent / (stem.name + ".png")
        value.save(path)
    elif modality == "audio":
        path = stem.parent / (stem.name + ".wav")
        save_audio(value, path)
    else:
        raise ValueError(f"unknown modality {modality!r}")
    return path


__all__ = ["PathNotAllowedError", "check_modality", "confine", "load_audio", "load_image", "save_audio", "save_output"]
