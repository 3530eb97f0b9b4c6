"""The one record type every benchmark loader yields, and the errors loaders raise.

A record is one prompt the model answers: MMBench's circular rotations are separate records sharing a `group`.
Images stay on disk (or as encoded bytes) until `load_image()` is called, so loading a benchmark is cheap.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

BENCHMARKS = ("mme", "pope", "mmbench", "mmbench_cn", "seed")


class BenchmarkFormatError(ValueError):
    """A benchmark file or folder is not in the expected layout; the message names file, line/row and field."""


def json_object(line: str, where: str) -> dict:
    """One JSON object from a line of a benchmark or predictions file; anything else names `where` (file:line)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:  # its messages may end in "at": the column goes first
        raise BenchmarkFormatError(f"{where}: not a JSON object (column {error.colno}: {error.msg})") from error
    if not isinstance(row, dict):
        raise BenchmarkFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row


@dataclass
class EvalRecord:
    """One question of a benchmark, in a form common to all of them.

    Attributes:
        benchmark: one of `BENCHMARKS`.
        uid: unique id of this prompt within the benchmark (MMBench rotations append `@r<k>`).
        question: the question as stored in the benchmark file (no prompt suffix added).
        answer: the ground truth — `"yes"`/`"no"` (MME, POPE) or an option letter (MMBench, SEED).
        subtask: MME subtask, POPE split, MMBench category or SEED dimension name.
        image_path: image file on disk, or None when the image is inline (`image_bytes`).
        image_bytes: encoded image (MMBench base64 / parquet bytes), or None.
        image_id: the image's name (MME acc+ groups by `(subtask, image_id)`).
        options: ordered `{letter: option text}` as shown to the model (empty for yes/no benchmarks).
        hint: MMBench hint, if any.
        group: CircularEval group (MMBench original index); equals `uid` elsewhere.
        round: rotation index within `group` (0 = original order).
        source: `"file:line"` where the record came from — used in every error message.
        extra: benchmark-specific fields kept for the report (e.g. MMBench `l2-category`).
    """

    benchmark: str
    uid: str
    question: str
    answer: str
    subtask: str
    image_path: str | None = None
    image_bytes: bytes | None = None
    image_id: str = ""
    options: dict[str, str] = field(default_factory=dict)
    hint: str | None = None
    group: str = ""
    round: int = 0
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.group:
            self.group = self.uid

    def load_image(self):
        """The record's image as an RGB `PIL.Image`; a missing or unreadable image names the file and the row."""
        from PIL import Image, UnidentifiedImageError  # heavy

        try:
            if self.image_bytes is not None:
                image = Image.open(io.BytesIO(self.image_bytes))
            elif self.image_path is not None:
                if not os.path.isfile(self.image_path):
                    raise BenchmarkFormatError(f"{self.source}: image file {self.image_path!r} does not exist")
                image = Image.open(self.image_path)
            else:
                raise BenchmarkFormatError(f"{self.source}: record {self.uid!r} has no image")
            return image.convert("RGB")
        except (UnidentifiedImageError, OSError) as error:
            where = self.image_path or "inline image"
            raise BenchmarkFormatError(f"{self.source}: cannot decode {where}: {error}") from error


@dataclass
class LoadedBenchmark:
    """The records of one benchmark plus what was skipped while loading (never silently dropped)."""

    benchmark: str
    records: list[EvalRecord]
    layout: str
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)


def blank_image(size: int = 336):
    """A uniform grey RGB image (the text-only baseline's stand-in for every image)."""
    from PIL import Image  # heavy

    return Image.new("RGB", (size, size), (128, 128, 128))


__all__ = ["BENCHMARKS", "BenchmarkFormatError", "EvalRecord", "LoadedBenchmark", "blank_image", "json_object"]


@contextlib.contextmanager
def skip_bad_row(strict: bool, skipped: list[str]) -> Iterator[None]:
    """A loader's guard around one row: a `BenchmarkFormatError` inside is raised again when `strict`, otherwise its
    message joins `skipped` and the loader goes on with the next row."""
    try:
        yield
    except BenchmarkFormatError as error:
        if strict:
            raise
        skipped.append(str(error))
