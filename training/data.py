"""LLaVA-format data: JSON / JSONL rows + an image folder, loaded through `datasets`, decoded lazily.

Row format (LLaVA): `{"id": str, "image": "relative/path.png" (optional), "conversations": [{"from": "human"|"gpt",
"value": str}, ...]}` with `<image>` in the first human turn (moved to the front; added there when missing).

Bad input never stops a run and is never trained on silently:

- at load time, malformed rows (not an object, no conversations, unknown role, no answer, `<image>` without an image,
  several images) and rows whose image file is missing are skipped and counted by reason with their row ids;
- at read time (lazily, in `__getitem__`), a corrupt image or a sample that cannot be masked / truncated correctly is
  skipped the same way and replaced by the next usable row, so batch sizes stay constant;
- `SkipLog.report()` lists every reason with counts and row ids; the trainer prints it at the end of the run.

No preprocessing pass over the whole set: rows are validated cheaply (JSON + a file-exists check), images are opened
and tokens computed only when a sample is read.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from PIL import Image, UnidentifiedImageError

from .templates import IMAGE_TOKEN, ROLE_MAP, ConversationEncoder, SampleError

logger = logging.getLogger(__name__)
MAX_IDS_PER_REASON = 20


class DataError(ValueError):
    """The data cannot be used at all (missing file, unreadable JSON, nothing left after skipping)."""


@dataclass
class SkipLog:
    """Skipped rows by reason: counts and the first row ids (`MAX_IDS_PER_REASON` per reason)."""

    rows: dict[str, set] = field(default_factory=lambda: defaultdict(set))
    truncated: set = field(default_factory=set)

    def add(self, row_id: str, reason: str) -> None:
        if row_id not in self.rows[reason]:
            logger.warning("Skipping row %s: %s", row_id, reason)
        self.rows[reason].add(row_id)

    @property
    def total(self) -> int:
        return len(set().union(*self.rows.values())) if self.rows else 0

    def counts(self) -> dict[str, int]:
        return {reason: len(ids) for reason, ids in sorted(self.rows.items())}

    def report(self) -> str:
        """One line per reason: `reason: N row(s) (ids …)`; plus the number of samples cut after the image."""
        lines = []
        for reason, ids in sorted(self.rows.items()):
            shown = sorted(ids, key=str)[:MAX_IDS_PER_REASON]
            more = f", … {len(ids) - len(shown)} more" if len(ids) > len(shown) else ""
            lines.append(f"{reason}: {len(ids)} row(s) (ids {', '.join(map(str, shown))}{more})")
        if self.truncated:
            lines.append(f"truncated after the image to max_length: {len(self.truncated)} row(s)")
        return "\n".join(lines) if lines else "no rows skipped"


# ------------------------------------------------------------------------------------------------- reading rows
def read_rows(path: str | os.PathLike, skips: SkipLog) -> list[tuple[str, object]]:
    """`(row_id, raw_row)` pairs from a `.json` (list) or `.jsonl` file. Bad JSONL lines are skipped and counted."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Data file {str(path)!r} does not exist (expected LLaVA-format .json or .jsonl).")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        pairs = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                pairs.append((f"{path.name}:{number}", json.loads(line)))
            except json.JSONDecodeError as error:
                skips.add(f"{path.name}:{number}", f"malformed row: invalid JSON ({error.msg})")
        return pairs
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}.") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows (LLaVA format), got {type(data).__name__}.")
    return [(f"{path.name}[{index}]", row) for index, row in enumerate(data)]


def normalise_row(raw: object, fallback_id: str) -> dict:
    """Validate one LLaVA row → `{"id", "image" (str or None), "conversations"}`; raises `SampleError`."""
    if not isinstance(raw, dict):
        raise SampleError("malformed row", f"expected an object, got {type(raw).__name__}")
    row_id = str(raw.get("id", fallback_id))
    conversations = raw.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise SampleError("malformed row", "`conversations` must be a non-empty list")
    turns = []
    for turn in conversations:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or turn.get("from") not in ROLE_MAP:
            raise SampleError("malformed row", f"each turn needs `from` in {sorted(ROLE_MAP)} and a string `value`")
        turns.append({"from": turn["from"], "value": turn["value"]})
    late_system = [index for index, t in enumerate(turns) if ROLE_MAP[t["from"]] == "system" and index > 0]
    if late_system:
        raise SampleError(
            "malformed row", f"a system turn may only come first; turn {late_system[0]} of {len(turns)} is `system`"
        )
    roles = [ROLE_MAP[t["from"]] for t in turns if ROLE_MAP[t["from"]] != "system"]
    if roles[::2] != ["user"] * len(roles[::2]) or roles[1::2] != ["assistant"] * len(roles[1::2]):
        raise SampleError("malformed row", "turns must alternate human, gpt, human, … starting with human")
    if "assistant" not in roles:
        raise SampleError("malformed row", "no gpt turn to learn from")
    image = raw.get("image")
    if isinstance(image, list):
        if len(image) != 1:
            raise SampleError("malformed row", f"{len(image)} images; one image per row is supported")
        image = image[0]
    if image is not None and not isinstance(image, str):
        raise SampleError("malformed row", "`image` must be a path string")
    markers = sum(t["value"].count(IMAGE_TOKEN) for t in turns)
    if image is None and markers:
        raise SampleError("malformed row", "text holds <image> but the row has no `image`")
    if image is not None and markers > 1:
        raise SampleError("malformed row", f"{markers} <image> markers for one image")
    return {"id": row_id, "image": image, "conversations": turns}


def modality_length(row: dict, num_image_tokens: int) -> int:
    """LLaVA's cheap length estimate: words (+ image tokens); negative for text-only rows."""
    words = sum(len(turn["value"].split()) for turn in row["conversations"])
    return words + num_image_tokens if row["image"] is not None else -words


def load_rows(path: str | os.PathLike, image_folder: str | os.PathLike | None, skips: SkipLog) -> list[dict]:
    """Valid rows of one file; image paths resolved against `image_folder` (default: the file's folder)."""
    folder = Path(image_folder) if image_folder is not None else Path(path).parent
    rows = []
    for fallback_id, raw in read_rows(path, skips):
        try:
            row = normalise_row(raw, fallback_id)
        except SampleError as error:
            skips.add(str(raw.get("id", fallback_id)) if isinstance(raw, dict) else fallback_id, str(error))
            continue
        if row["image"] is not None:
            image_path = folder / row["image"]
            if not image_path.is_file():
                skips.add(row["id"], "missing image file")
                continue
            row["image"] = str(image_path)
        rows.append(row)
    return rows


def mix_replay(main: list[dict], replay: list[dict], ratio: float, seed: int) -> list[dict]:
    """Stage 3: `main` plus replay rows making up `ratio` of the mix (the paper's 10 %), sampled with `seed`."""
    if ratio <= 0 or not replay:
        return list(main)
    wanted = round(len(main) * ratio / (1.0 - ratio))
    if wanted > len(replay):
        logger.warning("Replay data has %d rows, fewer than the %d wanted for ratio %.2f", len(replay), wanted, ratio)
        wanted = len(replay)
    return list(main) + random.Random(seed).sample(replay, wanted)


# ----------------------------------------------------------------------------------------------------- dataset
class LlavaDataset(torch.utils.data.Dataset):
    """Map-style dataset over LLaVA rows held in a `datasets.Dataset`; images and tokens are made on access.

    Each item: `{"input_ids": (L,), "labels": (L,), "pixel_values": (1, 3, H, W) or None, "id": str,
    "truncated": bool, "skipped": [(row_id, reason), ...]}` (rows skipped to reach this one).
    `lengths` (for `group_by_modality_length`) are LLaVA's word-count estimates, negative for text-only rows.

    `pretokenize=True` encodes every row's text once, here (as TRL's SFTTrainer tokenises its data set before
    training): rows that cannot be masked are skipped and counted now, and reading a sample later only opens its
    image. Otherwise text is encoded on access, in whichever process reads the sample (a dataloader worker or the
    training loop), every epoch.
    """

    def __init__(
        self,
        rows: list[dict],
        processor,
        template: str,
        max_length: int,
        skips: SkipLog | None = None,
        pretokenize: bool = False,
    ):
        self.skips = skips if skips is not None else SkipLog()
        self.processor = processor
        self.encoder = ConversationEncoder(processor, template, max_length)
        if pretokenize:
            rows = self._pretokenize(rows)
        if not rows:
            raise DataError(f"No usable rows left after skipping. Skipped:\n{self.skips.report()}")
        self.rows = datasets.Dataset.from_list(rows)
        self.lengths = [modality_length(row, processor.num_image_tokens) for row in rows]

    def _pretokenize(self, rows: list[dict]) -> list[dict]:
        """`rows` with their `input_ids`, `labels` and `truncated` added; rows that fail to encode are skipped."""
        encoded = []
        for row in rows:
            try:
                sample = self.encoder.encode(row["conversations"], row["image"] is not None)
            except SampleError as error:
                self.skips.add(row["id"], error.reason)
                continue
            if sample.truncated:
                self.skips.truncated.add(row["id"])
            encoded.append(
                {**row, "input_ids": sample.input_ids, "labels": sample.labels, "truncated": sample.truncated}
            )
        return encoded

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        skipped = []
        for offset in range(len(self)):
            row = self.rows[(index + offset) % len(self)]
            try:
                item = self.encode_row(row)
            except SampleError as error:
                self.skips.add(row["id"], error.reason)
                skipped.append((row["id"], error.reason))
                continue
            # travels with the batch, so skips found in dataloader worker processes reach the trainer's log
            item["skipped"] = skipped
            return item
        raise DataError(f"Every row failed to encode. Skipped:\n{self.skips.report()}")

    def to_hf_dataset(self):
        """The same samples as a `datasets.Dataset` (lazy: a transform encodes rows on access), for libraries that
        insist on one (TRL's SFTTrainer). Carries `.lengths` for the modality-grouped sampler."""
        indexed = self.rows.add_column("_index", list(range(len(self))))

        def transform(batch: dict) -> dict:
            items = [self[index] for index in batch["_index"]]
            keys = ("input_ids", "labels", "pixel_values", "id", "truncated", "skipped")
            return {key: [item[key] for item in items] for key in keys}

        dataset = indexed.with_transform(transform)
        dataset.lengths = self.lengths
        dataset.skips = self.skips
        return dataset

    def encode_row(self, row: dict) -> dict:
        """One training sample; raises `SampleError` (corrupt image, masking or truncation failure)."""
        has_image = row["image"] is not None
        if "input_ids" in row:  # encoded when the data set was built (`pretokenize=True`)
            input_ids, labels, truncated = row["input_ids"], row["labels"], row["truncated"]
        else:
            sample = self.encoder.encode(row["conversations"], has_image)
            if sample.truncated:
                self.skips.truncated.add(row["id"])
            input_ids, labels, truncated = sample.input_ids, sample.labels, sample.truncated
        pixel_values = self._load_image(row["image"]) if has_image else None
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "pixel_values": pixel_values,
            "id": row["id"],
            "truncated": truncated,
        }

    def _load_image(self, path: str) -> torch.Tensor:
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as error:
            raise SampleError("corrupt image", f"{path}: {error}") from None
        return self.processor.image_processor([image], return_tensors="pt")["pixel_values"]


def build_dataset(
    data_path: str | os.PathLike,
    processor,
    template: str,
    max_length: int,
    image_folder: str | os.PathLike | None = None,
    replay_data: str | os.PathLike | None = None,
    replay_ratio: float = 0.0,
    max_samples: int | None = None,
    seed: int = 42,
    pretokenize: bool = False,
) -> LlavaDataset:
    """Load, validate and (stage 3) mix LLaVA-format data into a `LlavaDataset`.

    `max_samples` keeps the first N usable rows of `data_path`; replay rows are then added so that they make up
    `replay_ratio` of the mix.

    `pretokenize`: encode every row's text now rather than on each access (see `LlavaDataset`).

    Raises `DataError` for a missing/unreadable file or when nothing usable is left; skips are in `dataset.skips`.
    """
    skips = SkipLog()
    rows = load_rows(data_path, image_folder, skips)
    if max_samples is not None:
        rows = rows[:max_samples]
    if replay_data is not None:  # replay rows are resolved against their own file's folder
        rows = mix_replay(rows, load_rows(replay_data, None, skips), replay_ratio, seed)
    return LlavaDataset(rows, processor, template, max_length, skips, pretokenize=pretokenize)


__all__ = [
    "LlavaDataset",
    "SkipLog",
    "DataError",
    "build_dataset",
    "load_rows",
    "normalise_row",
    "read_rows",
    "mix_replay",
    "modality_length",
]
