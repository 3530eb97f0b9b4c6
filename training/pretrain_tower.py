"""Stage 0 (vision): a short CLIP-style contrastive pretraining of the tiny vision tower on image–caption pairs.

The real MAGE starts from a pretrained CLIP that stays frozen; a frozen *random* tower gives the tiny demo model
little to align to (docs/DECISIONS.md, "Stage 0 vision"). This plays CLIP's part: the tower and a small text encoder
(embedding bag over the LM tokenizer's ids + MLP) are trained with the symmetric InfoNCE loss for a bounded number of
steps, then the text encoder is thrown away. The pooled image vector is the mean of the tower's `vision_feature_layer`
patch tokens — exactly the features MAGE consumes — and captions that name positions keep layout in those features.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TowerPretrainReport:
    steps: int
    seconds: float
    final_loss: float
    retrieval_top1_before: float  # image → caption top-1 on held-out pairs (identical captions count as hits)
    retrieval_top1_after: float


class CaptionEncoder(nn.Module):
    """Mean of token embeddings (padding excluded) → MLP. `(B, T)` ids → `(B, D)`."""

    def __init__(self, vocab_size: int, width: int, out_dim: int, pad_token_id: int):
        super().__init__()
        self.pad_token_id = pad_token_id
        self.embed = nn.Embedding(vocab_size, width)
        self.position = nn.Embedding(128, width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, out_dim))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != self.pad_token_id).float().unsqueeze(-1)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).clamp(max=127)
        # Word order matters ("red circle left of blue square"): add positions before pooling.
        hidden = self.embed(input_ids) + self.position(positions)
        return self.mlp((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0))


def _image_embedding(model, pixel_values: torch.Tensor, head: nn.Module) -> torch.Tensor:
    features = model.model.select_vision_features(pixel_values)  # (B, N, D_v) at vision_feature_layer
    return head(features.mean(1))


def _targets(caption_ids: list[int]) -> torch.Tensor:
    """Match matrix: identical captions are all positives (docs/DECISIONS.md, "Stage 0 vision")."""
    ids = torch.tensor(caption_ids)
    return (ids.unsqueeze(0) == ids.unsqueeze(1)).float()


def _contrastive_loss(image_emb, text_emb, scale, matches):
    logits = scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    targets = matches / matches.sum(1, keepdim=True)
    return 0.5 * (
        F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T / targets.T.sum(1, keepdim=True))
    )


@torch.no_grad()
def retrieval_top1(model, head, text_encoder, pixel_values, caption_tensor, caption_ids) -> float:
    image_emb = F.normalize(_image_embedding(model, pixel_values, head), dim=-1)
    text_emb = F.normalize(text_encoder(caption_tensor), dim=-1)
    best = (image_emb @ text_emb.T).argmax(1)
    matches = _targets(caption_ids)
    return float(matches[torch.arange(len(best)), best].mean())


def pretrain_vision_tower(
    model,
    processor,
    images: list,
    captions: list[str],
    max_seconds: float | None = None,
    max_steps: int = 2000,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    held_out: int = 128,
    seed: int = 0,
    progress=None,
) -> TowerPretrainReport:
    """Train `model.model.vision_tower` contrastively on `(images, captions)` in place; returns retrieval accuracy
    on the last `held_out` pairs before and after. Stops after `max_steps` (or earlier at `max_seconds`, if given —
    which makes the result depend on the machine's speed)."""
    generator = torch.Generator().manual_seed(seed)
    tower = model.model.vision_tower
    width = model.config.vision_config.hidden_size
    pixel_values = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    tokenizer = processor.tokenizer
    caption_tensor = tokenizer(
        captions, padding=True, padding_side="right", return_tensors="pt", add_special_tokens=False
    )["input_ids"]
    unique = {caption: index for index, caption in enumerate(dict.fromkeys(captions))}
    caption_ids = [unique[c] for c in captions]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(width, 64)
        text_encoder = CaptionEncoder(len(tokenizer), 64, 64, tokenizer.pad_token_id)
    log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
    train_count = len(images) - held_out
    if train_count < batch_size:
        raise ValueError(f"pretrain_vision_tower needs more than {batch_size + held_out} pairs, got {len(images)}.")
    test = slice(train_count, len(images))

    was_training = tower.training
    tower.requires_grad_(True)
    parameters = list(tower.parameters()) + list(head.parameters()) + list(text_encoder.parameters()) + [log_scale]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.01)
    before = retrieval_top1(model, head, text_encoder, pixel_values[test], caption_tensor[test], caption_ids[test])

    started, step, loss = time.perf_counter(), 0, torch.tensor(float("nan"))
    tower.train()
    while step < max_steps and (max_seconds is None or time.perf_counter() - started < max_seconds):
        batch = torch.randint(0, train_count, (batch_size,), generator=generator)
        lr_scale = min(1.0, (step + 1) / 20)  # short warm-up
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * lr_scale
        image_emb = _image_embedding(model, pixel_values[batch], head)
        text_emb = text_encoder(caption_tensor[batch])
        matches = _targets([caption_ids[i] for i in batch.tolist()])
        loss = _contrastive_loss(image_emb, text_emb, log_scale.exp().clamp(max=100.0), matches)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if progress is not None and step % 20 == 0:
            progress(step, float(loss))
    tower.train(was_training)
    tower.eval()
    after = retrieval_top1(model, head, text_encoder, pixel_values[test], caption_tensor[test], caption_ids[test])
    return TowerPretrainReport(step, time.perf_counter() - started, float(loss.detach()), before, after)


__all__ = ["pretrain_vision_tower", "TowerPretrainReport"]
