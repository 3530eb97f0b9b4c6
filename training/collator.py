"""Batching: the `MageDataCollator` (padding, images, ITDM text) and the modality-length-grouped sampler."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .templates import IGNORE_INDEX

ITDM_KEYS = ("itdm_input_ids", "itdm_attention_mask", "itdm_pool_mask")
ALLOWED_KEYS = {"input_ids", "labels", "pixel_values", "id", "truncated", "skipped"}
SKIP_KEY = "mage_data_events"  # non-tensor batch entry: skips / truncations seen while loading this batch


@dataclass
class MageDataCollator:
    """Pads `LlavaDataset` items into a model batch plus the inputs of the ITDM term.

    Output:
        - `input_ids (B, L)`, `attention_mask (B, L)`, `labels (B, L)` (right padding, labels -100 on padding);
        - `pixel_values (num_images, 3, H, W)` in row order, when any row has an image;
        - `mage_data_events`: `[(row_id, reason), ...]` rows skipped or truncated while loading (when any); the
          trainer moves them into the data set's `SkipLog` (dataloader workers are other processes);
        - for the image rows only, in the same order: `itdm_input_ids (N_img, T)` = BOS + the row's supervised text
          (caption / answers, without `</s>`), `itdm_attention_mask (N_img, T)`, and `itdm_pool_mask (N_img, T)`
          (the answer tokens averaged into `d_llm`: BOS and padding excluded).

    Args:
        pad_token_id: the tokenizer's pad id; bos_token_id / eos_token_id: for the ITDM text (None = not used).
    """

    pad_token_id: int
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    @classmethod
    def from_processor(cls, processor) -> MageDataCollator:
        tokenizer = processor.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return cls(pad_token_id=pad, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        unexpected = {key for example in examples for key in example} - ALLOWED_KEYS
        if unexpected:
            raise KeyError(f"Unexpected input keys in examples: {sorted(unexpected)}")
        batch = {
            "input_ids": self._pad([e["input_ids"] for e in examples], self.pad_token_id),
            "labels": self._pad([e["labels"] for e in examples], IGNORE_INDEX),
        }
        lengths = torch.tensor([len(e["input_ids"]) for e in examples])
        batch["attention_mask"] = (torch.arange(batch["input_ids"].shape[1])[None, :] < lengths[:, None]).long()
        events = [(row_id, reason) for e in examples for row_id, reason in e.get("skipped", ())]
        events += [(e["id"], "truncated") for e in examples if e.get("truncated")]
        if events:
            batch[SKIP_KEY] = events
        image_rows = [e for e in examples if e.get("pixel_values") is not None]
        if image_rows:
            batch["pixel_values"] = torch.cat([e["pixel_values"] for e in image_rows], dim=0)
            batch.update(self._itdm_text(image_rows))
        return batch

    @staticmethod
    def _pad(sequences: list[torch.Tensor], value: int) -> torch.Tensor:
        return torch.nn.utils.rnn.pad_sequence(
            [torch.as_tensor(s, dtype=torch.long) for s in sequences], batch_first=True, padding_value=value
        )

    def _itdm_text(self, image_rows: list[dict]) -> dict[str, torch.Tensor]:
        texts, pools = [], []
        for example in image_rows:
            labels = torch.as_tensor(example["labels"])
            answer = labels[labels != IGNORE_INDEX]
            if self.eos_token_id is not None:
                answer = answer[answer != self.eos_token_id]
            prefix = [self.bos_token_id] if self.bos_token_id is not None else []
            texts.append(torch.cat([torch.tensor(prefix, dtype=torch.long), answer]))
            pools.append(torch.tensor([0] * len(prefix) + [1] * len(answer), dtype=torch.long))
        input_ids = self._pad(texts, self.pad_token_id)
        lengths = torch.tensor([len(t) for t in texts])
        attention = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
        return {"itdm_input_ids": input_ids, "itdm_attention_mask": attention, "itdm_pool_mask": self._pad(pools, 0)}


def modality_length_grouped_indices(
    lengths: list[int], megabatch_size: int, generator: torch.Generator, group_factor: int = 1
) -> list[int]:
    """LLaVA's `get_modality_length_grouped_indices`: image rows (length > 0) and text-only rows (< 0) are shuffled
    separately, cut into megabatches of `megabatch_size` (per-device batch × processes × accumulation), each sorted
    longest first; megabatches are shuffled; the two leftover partial megabatches go last, merged.

    `group_factor` > 1 sorts `group_factor` megabatches at a time, then cuts them into megabatches and shuffles those
    (transformers' `LengthGroupedSampler` sorts 50 at a time): rows of similar length share a batch, so padding
    shrinks. 1 is LLaVA's order exactly."""
    image = [i for i, length in enumerate(lengths) if length > 0]
    text = [i for i, length in enumerate(lengths) if length <= 0]
    group_size = megabatch_size * max(1, group_factor)

    def megabatches(indices: list[int]) -> list[list[int]]:
        order = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
        chunks = [order[i : i + group_size] for i in range(0, len(order), group_size)]
        return [sorted(chunk, key=lambda i: -abs(lengths[i])) for chunk in chunks]

    image_chunks, text_chunks = megabatches(image), megabatches(text)
    leftovers = []
    for chunks in (image_chunks, text_chunks):
        if chunks and len(chunks[-1]) < group_size:
            leftovers.extend(chunks.pop())
    full = [
        group[i : i + megabatch_size]
        for group in image_chunks + text_chunks
        for i in range(0, group_size, megabatch_size)
    ]
    full = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
    if leftovers:
        full.append(sorted(leftovers, key=lambda i: -abs(lengths[i])))
    return [index for chunk in full for index in chunk]


class ModalityLengthGroupedSampler(torch.utils.data.Sampler):
    """Batches that are all-image or all-text (except the last), deterministic from `seed` and the epoch;
    `group_factor` as in `modality_length_grouped_indices`."""

    def __init__(self, lengths: list[int], megabatch_size: int, seed: int = 0, group_factor: int = 1):
        self.lengths = list(lengths)
        self.megabatch_size = megabatch_size
        self.seed = seed
        self.group_factor = group_factor
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(modality_length_grouped_indices(self.lengths, self.megabatch_size, generator, self.group_factor))


__all__ = ["MageDataCollator", "ModalityLengthGroupedSampler", "modality_length_grouped_indices", "ITDM_KEYS"]
