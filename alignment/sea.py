"""SEA — Supervised Embedding Alignment (arXiv 2408.11813), as read in ALIGNMENT_METHODS.md §1.

Pure tensor functions (Eqs. 6–9), the two patch labellers and the objective:

* `extract_semantic_labels` — Eqs. 4–6 + the "< 0" filter on given patch/word features (real CLIP or anything else).
* `ClipPatchLabeller` — Eqs. 4–6 with any `transformers.CLIPModel` (the paper uses CLIP-L/336; tests use a tiny random
  one). Offline preprocessing, exactly the paper's pipeline given the weights and a word list.
* `shapeworld_patch_labels` — **SUBSTITUTE** for the CLIP labeller on ShapeWorld: exact labels from the scene ground
  truth (object colour/shape words scored by pixel coverage of the cell, plus "background").
* `sea_label_probabilities` (Eq. 7), `sea_sample_pairs` (localized k×k sampling + similarity-weighted draw + batch
  de-duplication, §4.2), `sea_word_features` (Eq. 8), `sea_contrastive_loss` (Eq. 9).
* `SEAObjective` — `(model, inputs, outputs) -> (loss, logs)`, with the learnable temperature (`logit_scale`).
* `SEALabelCollator` — adds each image row's SEA labels to the batch of `MageDataCollator`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shapeworld.world import BACKGROUND, COLOURS, SHAPES, render_scene

NO_LABEL = -1
SEA_KEYS = ("sea_label_ids", "sea_label_scores")


# ----------------------------------------------------------------------------------------------- Eqs. 4–6 labels
def extract_semantic_labels(
    patch_feats: torch.Tensor, word_feats: torch.Tensor, top_n: int = 10, negate: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 4–6: the top-`top_n` words per patch by (optionally negated, CLIP-Surgery style) cosine similarity.

    Args:
        patch_feats: `(..., m, d)` patch features in the joint space.
        word_feats: `(q, d)` word features.
        top_n: labels kept per patch (paper: 10).
        negate: apply the minus sign of Eq. 6 (the paper; ambiguity 2 of ALIGNMENT_METHODS.md).

    Returns:
        `(ids, scores)`, each `(..., m, min(top_n, q))`; labels whose score is < 0 get id `NO_LABEL` (-1) and score 0.
    """
    similarity = F.normalize(patch_feats.float(), dim=-1) @ F.normalize(word_feats.float(), dim=-1).T
    if negate:
        similarity = -similarity
    scores, ids = similarity.topk(min(top_n, word_feats.shape[0]), dim=-1)
    dropped = scores < 0
    return ids.masked_fill(dropped, NO_LABEL), scores.masked_fill(dropped, 0.0)


class ClipPatchLabeller:
    """Eqs. 4–6 with a real `CLIPModel`: patch features = last vision layer → `post_layernorm` →
    `visual_projection` (the joint space, CLS dropped); word features = `text_projection` of the text model's pooled
    output for `prompt.format(word)`.

    Args:
        clip_model: any `transformers.CLIPModel` (CLIP-L/336 in the paper).
        tokenizer: its tokenizer (any callable returning `input_ids` / `attention_mask`).
        words: the word list W.
        prompt: template for each word (paper: unstated, ambiguity 3); `"{}"` = the bare word.
        top_n, negate: as in `extract_semantic_labels`.

    `__call__(pixel_values (B, 3, H, W), grid=None)` → `(ids, scores)` of shape `(B, g, g, n)` on the tower's patch
    grid, or average-pooled to `grid × grid` cells first (for projectors whose tokens lie on a coarser grid).
    """

    def __init__(
        self, clip_model, tokenizer, words: Sequence[str], prompt: str = "{}", top_n: int = 10, negate: bool = True
    ):
        if not words:
            raise ValueError("ClipPatchLabeller needs a non-empty word list.")
        self.model = clip_model.eval()
        self.words = list(words)
        self.top_n, self.negate = top_n, negate
        with torch.no_grad():
            batch = tokenizer(
                [prompt.format(w) for w in self.words], padding=True, padding_side="right", return_tensors="pt"
            )
            pooled = clip_model.text_model(
                input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")
            ).pooler_output
            self.word_feats = clip_model.text_projection(pooled)

    @torch.no_grad()
    def patch_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` → `(B, g, g, d)` joint-space patch features."""
        vision = self.model.vision_model(pixel_values=pixel_values)
        tokens = vision.last_hidden_state[:, 1:]
        feats = self.model.visual_projection(self.model.vision_model.post_layernorm(tokens))
        side = math.isqrt(feats.shape[1])
        return feats.reshape(feats.shape[0], side, side, -1)

    def __call__(self, pixel_values: torch.Tensor, grid: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.patch_features(pixel_values)
        if grid is not None and grid != feats.shape[1]:
            feats = F.adaptive_avg_pool2d(feats.permute(0, 3, 1, 2), grid).permute(0, 2, 3, 1)
        return extract_semantic_labels(feats, self.word_feats, self.top_n, self.negate)


# ----------------------------------------------------------------------------- ShapeWorld oracle (SUBSTITUTE A)
BACKGROUND_WORD = "background"


def shapeworld_words() -> list[str]:
    """The oracle word list: ShapeWorld's colour and shape words, then "background"."""
    return [*COLOURS, *SHAPES, BACKGROUND_WORD]


def object_masks(scene: dict, image_size: int) -> list[torch.Tensor]:
    """One boolean `(S, S)` mask per object of `scene`, from rendering it alone on the background."""
    masks = []
    for obj in scene["objects"]:
        alone = {**scene, "objects": [obj], "marks": [], "label": None}
        pixels = np.asarray(render_scene(alone, image_size).convert("RGB"), dtype=np.int16)
        masks.append(torch.from_numpy(np.abs(pixels - np.array(BACKGROUND)).sum(-1) > 0))
    return masks


def coverage_labels(
    masks: Sequence[torch.Tensor], object_words: Sequence[Sequence[int]], grid: int, background_id: int, top_n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Oracle labels from object masks: each object's words score `cov(cell, object)`, background scores
    `max(0, 1 − Σ cov)`; the top `top_n` per cell (ties keep the object order). Returns `(ids, scores)`, `(g, g, n)`.

    Example: a cell 75 % covered by a red circle → {red: .75, circle: .75, background: .25}.
    """
    cells: list[list[dict[int, float]]] = [[{} for _ in range(grid)] for _ in range(grid)]
    total = torch.zeros(grid, grid)
    for mask, words in zip(masks, object_words):
        cov = F.adaptive_avg_pool2d(mask.float()[None, None], grid)[0, 0]  # (g, g) fraction of each cell
        total += cov
        for r in range(grid):
            for c in range(grid):
                if cov[r, c] > 0:
                    for w in words:
                        cells[r][c][w] = cells[r][c].get(w, 0.0) + float(cov[r, c])
    ids = torch.full((grid, grid, top_n), NO_LABEL, dtype=torch.long)
    scores = torch.zeros(grid, grid, top_n)
    for r in range(grid):
        for c in range(grid):
            candidates = dict(cells[r][c])
            background = max(0.0, 1.0 - float(total[r, c]))
            if background > 0:
                candidates[background_id] = background
            ranked = sorted(candidates.items(), key=lambda item: -item[1])[:top_n]
            for k, (word, score) in enumerate(ranked):
                ids[r, c, k], scores[r, c, k] = word, score
    return ids, scores


def shapeworld_patch_labels(
    scene: dict, grid: int, words: Sequence[str] | None = None, image_size: int = 64, top_n: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """**SUBSTITUTE** for CLIP labels: exact ShapeWorld labels on a `grid × grid` cell grid of the square image.

    `words` defaults to `shapeworld_words()`; an object contributes its colour and shape words when present in it.
    Returns `(ids, scores)` of shape `(grid, grid, top_n)` (`NO_LABEL` padding).
    """
    words = list(words or shapeworld_words())
    index = {w: i for i, w in enumerate(words)}
    if BACKGROUND_WORD not in index:
        raise ValueError(f"the word list must contain {BACKGROUND_WORD!r} for ShapeWorld oracle labels.")
    object_words = [[index[obj[k]] for k in ("colour", "shape") if obj[k] in index] for obj in scene["objects"]]
    return coverage_labels(object_masks(scene, image_size), object_words, grid, index[BACKGROUND_WORD], top_n)


# ------------------------------------------------------------------------------------------ Eqs. 7–9 and §4.2
def sea_label_probabilities(scores: torch.Tensor) -> torch.Tensor:
    """Eq. 7, `S / sum(S)` over the last axis; negative scores count as 0; all-zero rows stay all-zero (no label)."""
    scores = scores.clamp(min=0)
    total = scores.sum(-1, keepdim=True)
    return torch.where(total > 0, scores / total.clamp(min=torch.finfo(scores.dtype).tiny), torch.zeros_like(scores))


def sea_sample_pairs(
    label_ids: torch.Tensor,
    label_scores: torch.Tensor,
    window: int,
    generator: torch.Generator | None = None,
    dedup: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """§4.2: one patch per `window × window` window (uniform), one label per patch (Eq. 7), then batch de-dup.

    Args:
        label_ids: `(B, H, W, n)` word ids, `NO_LABEL` = padding.
        label_scores: `(B, H, W, n)`.
        window: k; `H` and `W` must be divisible by it.
        generator: seeded `torch.Generator` (never the global RNG).
        dedup: keep one random pair per word in the batch (the paper).

    Returns:
        `(batch_idx, token_idx, word_idx)`, each `(N,)`; `token_idx` is the row-major index `h·W + w`.
    """
    batch, height, width, _ = label_ids.shape
    if height % window or width % window:
        raise ValueError(f"sea_window={window} must divide the label grid {height}×{width}.")
    probs = sea_label_probabilities(label_scores.float().masked_fill(label_ids < 0, 0.0))
    rows, cols = height // window, width // window
    offsets = torch.randint(0, window * window, (batch, rows, cols), generator=generator)
    h = torch.arange(rows)[None, :, None] * window + offsets // window
    w = torch.arange(cols)[None, None, :] * window + offsets % window
    b = torch.arange(batch)[:, None, None].expand_as(h)
    b, h, w = b.reshape(-1), h.reshape(-1), w.reshape(-1)
    patch_probs = probs[b, h, w]  # (P, n)
    has_label = patch_probs.sum(-1) > 0
    b, h, w, patch_probs = b[has_label], h[has_label], w[has_label], patch_probs[has_label]
    if b.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, empty
    choice = torch.multinomial(patch_probs, 1, generator=generator)[:, 0]
    words = label_ids[b, h, w, choice]
    if dedup:
        order = torch.randperm(words.numel(), generator=generator)
        keep, seen = [], set()
        for position in order.tolist():
            word = int(words[position])
            if word not in seen:
                seen.add(word)
                keep.append(position)
        keep_t = torch.tensor(sorted(keep), dtype=torch.long)
        b, h, w, words = b[keep_t], h[keep_t], w[keep_t], words[keep_t]
    return b, h * width + w, words


def sea_word_features(
    word_token_ids: torch.Tensor, word_token_mask: torch.Tensor, embed_tokens: nn.Module
) -> torch.Tensor:
    """Eq. 8: masked mean of the LLM input embeddings of each word's sub-tokens, `(W, M) → (W, D_l)`."""
    embeds = embed_tokens(word_token_ids)
    weights = word_token_mask.to(embeds.dtype).unsqueeze(-1)
    return (embeds * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def sea_contrastive_loss(visual: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Eq. 9: symmetric InfoNCE on cosine similarities, `½[CE(S, I) + CE(Sᵀ, I)]` with `S = cos · logit_scale`
    (`logit_scale = 1/τ`). `visual (N, D)`, `text (N, D)` → scalar; exactly 0 when N < 2 (no negatives)."""
    if visual.shape[0] < 2:
        return visual.sum() * 0.0
    logits = F.normalize(visual.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T
    logits = logits * logit_scale
    target = torch.arange(visual.shape[0], device=visual.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def tokenize_words(tokenizer, words: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """`(W, M_max)` sub-token ids and mask of each word, without special tokens (ambiguity 7: the bare word)."""
    pieces = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    if any(len(p) == 0 for p in pieces):
        bad = [w for w, p in zip(words, pieces) if not p]
        raise ValueError(f"words {bad} tokenize to nothing.")
    width = max(len(p) for p in pieces)
    ids = torch.zeros(len(words), width, dtype=torch.long)
    mask = torch.zeros(len(words), width, dtype=torch.bool)
    for i, p in enumerate(pieces):
        ids[i, : len(p)], mask[i, : len(p)] = torch.tensor(p), True
    return ids, mask


# ------------------------------------------------------------------------------------------------------ objective
class SEAObjective(nn.Module):
    """SEA's `L_a` as a training objective: `(model, inputs, outputs) -> (loss, logs)`.

    Reads `inputs["sea_label_ids"]`, `inputs["sea_label_scores"]` (each `(B_img, g, g, n)`, one row per image in
    text order) and the visual tokens: `apply_to="tokens"` uses `outputs.image_hidden_states` (B_img, T, D_l) (the
    per-patch adapter output for `linear`/`mlp2x_gelu` = the paper; the √Q-grid for query projectors = our variant),
    `apply_to="vab"` the IAN's VAB output `(B_img, N_p, D_l)` captured by a forward hook (faithful for MAGE: the VAB
    is SEA's per-patch adapter). Labels must be given on the grid of the chosen tokens.

    The only parameter is `logit_scale = log(1/τ)` (CLIP-style, learnable, clamped to ≤ log 100); it belongs to the
    trainer, not to the exported model. Per-step randomness comes from `generator` (seed it per step for exact resume).
    """

    def __init__(
        self,
        word_token_ids: torch.Tensor,
        word_token_mask: torch.Tensor,
        temperature: float = 0.07,
        learnable_temperature: bool = True,
        window: int = 2,
        dedup: bool = True,
        apply_to: str = "tokens",
    ):
        super().__init__()
        if apply_to not in ("tokens", "vab"):
            raise ValueError(f"sea_apply_to={apply_to!r}; expected 'tokens' or 'vab'.")
        if temperature <= 0:
            raise ValueError(f"sea_temperature={temperature} must be > 0 (the paper's 'τ = 0' is read as ambiguity 1).")
        self.register_buffer("word_token_ids", word_token_ids, persistent=False)
        self.register_buffer("word_token_mask", word_token_mask, persistent=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learnable_temperature)
        self.window, self.dedup, self.apply_to = window, dedup, apply_to
        self.generator = torch.Generator().manual_seed(0)
        self._captured: torch.Tensor | None = None
        self._hook_handle = None  # a RemovableHandle, not the module: the VAB must not become a submodule here

    def attach(self, model: nn.Module) -> None:
        """For `apply_to="vab"`: hook the IAN's VAB to capture its output during the model's forward."""
        if self.apply_to != "vab" or self._hook_handle is not None:
            return
        projector = _projector_of(model)
        vab = getattr(projector, "vab", None)
        if vab is None:
            raise ValueError("sea_apply_to='vab' needs projector_type='ian' (the VAB is its per-patch adapter).")
        self._hook_handle = vab.register_forward_hook(self._capture)

    def _capture(self, module, args, output) -> None:
        self._captured = output

    def visual_tokens(self, model: nn.Module, outputs) -> torch.Tensor:
        if self.apply_to == "vab":
            self.attach(model)
            if self._captured is None:
                raise RuntimeError("SEA: the VAB hook captured nothing; call `attach(model)` before the forward.")
            tokens, self._captured = self._captured, None
            return tokens
        return outputs.image_hidden_states

    def forward(self, model: nn.Module, inputs: dict, outputs) -> tuple[torch.Tensor, dict[str, float]]:
        tokens = self.visual_tokens(model, outputs)
        label_ids, label_scores = inputs["sea_label_ids"], inputs["sea_label_scores"]
        grid_tokens = label_ids.shape[1] * label_ids.shape[2]
        if tokens.shape[1] < grid_tokens or tokens.shape[0] != label_ids.shape[0]:
            raise ValueError(
                f"SEA labels are {tuple(label_ids.shape)} (B, g, g, n) but the visual tokens are {tuple(tokens.shape)}; "
                "give labels on the token grid (one row per image)."
            )
        tokens = tokens[:, -grid_tokens:]  # drop a CLS kept by the "full" strategy
        b, t, w = sea_sample_pairs(label_ids.cpu(), label_scores.cpu(), self.window, self.generator, self.dedup)
        embed = model.get_input_embeddings()
        device = tokens.device
        words = sea_word_features(self.word_token_ids[w.to(self.word_token_ids.device)], self.word_token_mask[w], embed)
        visual = tokens[b.to(device), t.to(device)]
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        loss = sea_contrastive_loss(visual, words.to(device).detach(), scale)
        return loss, {"sea_pairs": float(b.numel()), "sea_temperature": float(1.0 / scale.detach())}


def _projector_of(model: nn.Module) -> nn.Module:
    while not hasattr(model, "multi_modal_projector") and hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model.multi_modal_projector


# ------------------------------------------------------------------------------------------------------- collator
class SEALabelCollator:
    """`MageDataCollator` + SEA labels: `labels[row_id] = (ids (g, g, n) long, scores (g, g, n) float)`, added to the
    batch as `sea_label_ids`/`sea_label_scores` (one row per image, in batch order) for `SEAObjective`.

    Image rows without labels get all `NO_LABEL` (no pairs) and are counted in `missing`. `objective_keys` tells
    `training.objectives.AlignedMageTrainer` to take these keys out of the batch before the model's forward.
    """

    objective_keys = SEA_KEYS

    def __init__(self, base, labels: dict[str, tuple[torch.Tensor, torch.Tensor]], grid: int, top_n: int):
        self.base, self.labels, self.grid, self.top_n = base, labels, grid, top_n
        self.missing = 0

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.base(examples)
        image_rows = [e for e in examples if e.get("pixel_values") is not None]
        if not image_rows:
            return batch
        ids, scores = [], []
        for example in image_rows:
            found = self.labels.get(example["id"])
            if found is None:
                self.missing += 1
                found = (
                    torch.full((self.grid, self.grid, self.top_n), NO_LABEL),
                    torch.zeros(self.grid, self.grid, self.top_n),
                )
            ids.append(found[0])
            scores.append(found[1])
        batch["sea_label_ids"], batch["sea_label_scores"] = torch.stack(ids), torch.stack(scores)
        return batch


Objective = Callable[[nn.Module, dict, object], tuple[torch.Tensor, dict[str, float]]]

__all__ = [
    "NO_LABEL",
    "SEA_KEYS",
    "BACKGROUND_WORD",
    "extract_semantic_labels",
    "ClipPatchLabeller",
    "shapeworld_words",
    "object_masks",
    "coverage_labels",
    "shapeworld_patch_labels",
    "sea_label_probabilities",
    "sea_sample_pairs",
    "sea_word_features",
    "sea_contrastive_loss",
    "tokenize_words",
    "SEAObjective",
    "SEALabelCollator",
]
