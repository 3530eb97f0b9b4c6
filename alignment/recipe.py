"""SEA from a training recipe: what `training.api.train` (hence `mage train` and `mage ablate`) adds when
`recipe.alignment_objective == "sea"`.

    mage train --recipe stage1_tiny --model M --data train/stage1_captions.json --output-dir OUT \
        --set alignment_objective=sea [--set sea_weight=0.5]

Importing this module registers `sea_objective_parts` with training/ under the name "sea"
(`training.recipes.register_alignment_objective`; `mage train` and `mage ablate` import it). For a recipe naming
"sea", `train()` calls it with `(recipe, model, processor, dataset, data_path, collator)`; it returns the collator
(`SEALabelCollator` around the given one) and the objectives (`{"sea": (sea_weight, SEAObjective(...))}`) that
`train()` hands to `training.objectives.AlignedMageTrainer`. ITDM stays as `itdm_weight` says.

Patch labels (`sea_label_source`):

* `"shapeworld"`: the exact labels of `alignment.sea.shapeworld_patch_labels` (SUBSTITUTE for CLIP labels), from the
  `scenes.jsonl` that `mage data shapeworld` writes beside its LLaVA files, matched to the rows by image path and
  rendered at each image's own size.
* `"clip"`: Eqs. 4–6 with a real CLIP (`ClipPatchLabeller`): `sea_clip_model` is a folder holding a
  `transformers` `CLIPModel` with its tokenizer and image processor, `sea_word_list` a file with one word per line.
* `"auto"` (default): `"shapeworld"` when the scenes cover every image row, else `"clip"` when both CLIP fields are
  set, else a `RecipeError` naming the missing fields.

Both label sources work lazily: a row is labelled when a batch first holds it, then cached. The labels lie on the
grid of the tokens SEA is applied to: the projector's tokens (`sea_apply_to="tokens"`: √Q×√Q for query projectors,
the patch grid for `linear`/`mlp2x_gelu`) or the IAN's VAB output (`"vab"`: the patch grid).

alignment/ imports training/, never the reverse: training/ reaches SEA only through the registered builder.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

from modeling_mage.ian import get_projector_class
from training.recipes import Recipe, RecipeError, register_alignment_objective

from .sea import (
    NO_LABEL,
    ClipPatchLabeller,
    SEALabelCollator,
    SEAObjective,
    shapeworld_patch_labels,
    shapeworld_words,
    tokenize_words,
)

SCENES_FILE = "scenes.jsonl"  # ShapeWorld ground truth: {"image": relative path, "scene": {...}} per line


def _abs(path: str | os.PathLike) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def sea_label_grid(config, apply_to: str) -> int:
    """Side of the square grid the SEA labels must lie on, for a `MageConfig` and `sea_apply_to`."""
    if apply_to == "vab":
        if config.projector_type != "ian":
            raise RecipeError(
                f"sea_apply_to='vab' needs projector_type='ian' (the VAB is its per-patch adapter); the model has "
                f"projector_type={config.projector_type!r}: use sea_apply_to=tokens."
            )
        count = config.num_patches
    elif get_projector_class(config.projector_type).query_based:
        count = config.num_query_tokens
    else:
        count = config.num_patches
    side = math.isqrt(count)
    if side * side != count:
        raise RecipeError(f"SEA labels lie on a square grid, but the model's {count} visual tokens are not a square.")
    return side


def read_scenes(folders: Sequence[str | os.PathLike]) -> dict[str, dict]:
    """`{absolute image path: scene}` from the `scenes.jsonl` of each folder (image paths relative to it)."""
    scenes: dict[str, dict] = {}
    for folder in dict.fromkeys(_abs(f) for f in folders):
        path = Path(folder) / SCENES_FILE
        if path.is_file():
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        entry = json.loads(line)
                        scenes[_abs(Path(folder) / entry["image"])] = entry["scene"]
    return scenes


def _pad(ids: torch.Tensor, scores: torch.Tensor, top_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    missing = top_n - ids.shape[-1]
    if missing > 0:
        ids = torch.cat([ids, torch.full((*ids.shape[:-1], missing), NO_LABEL, dtype=ids.dtype)], -1)
        scores = torch.cat([scores, torch.zeros(*scores.shape[:-1], missing, dtype=scores.dtype)], -1)
    return ids, scores


class ShapeWorldRowLabels:
    """`get(row_id)` → `(ids, scores)` `(g, g, top_n)`: exact ShapeWorld labels (SUBSTITUTE for CLIP), computed on
    first use and cached. `images` maps row id → image path, `scenes` image path → scene."""

    def __init__(self, images: dict[str, str], scenes: dict[str, dict], grid: int, top_n: int, words: Sequence[str]):
        self.images, self.scenes = images, scenes
        self.grid, self.top_n, self.words = grid, top_n, list(words)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, row_id: str):
        if row_id not in self._cache:
            path = self.images.get(row_id)
            scene = self.scenes.get(_abs(path)) if path is not None else None
            if scene is None:
                return None
            with Image.open(path) as image:  # the header only: render the masks at the image's own size
                size = image.size[0]
            self._cache[row_id] = shapeworld_patch_labels(scene, self.grid, self.words, size, self.top_n)
        return self._cache[row_id]


class ClipRowLabels:
    """`get(row_id)` → `(ids, scores)` `(g, g, top_n)`: SEA's Eqs. 4–6 with a real `CLIPModel` on the row's image
    (`ClipPatchLabeller`, patch features pooled to the label grid), computed on first use and cached."""

    def __init__(self, images: dict[str, str], clip_path: str, words: Sequence[str], grid: int, top_n: int):
        self.images, self.grid, self.top_n = images, grid, top_n
        self.image_processor = AutoImageProcessor.from_pretrained(clip_path)
        model = CLIPModel.from_pretrained(clip_path, dtype=torch.float32)
        self.labeller = ClipPatchLabeller(model, AutoTokenizer.from_pretrained(clip_path), words, top_n=top_n)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, row_id: str):
        if row_id not in self._cache:
            path = self.images.get(row_id)
            if path is None:
                return None
            with Image.open(path) as image:
                pixels = self.image_processor([image.convert("RGB")], return_tensors="pt")["pixel_values"]
            ids, scores = self.labeller(pixels, grid=self.grid)
            self._cache[row_id] = _pad(ids[0], scores[0], self.top_n)
        return self._cache[row_id]


def read_word_list(path: str | os.PathLike) -> list[str]:
    """One word per line (blank lines and repeats dropped); a `RecipeError` names `sea_word_list` otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise RecipeError(f"sea_word_list={str(path)!r}: cannot read the word list ({error}).") from None
    words = list(dict.fromkeys(w.strip() for w in text.splitlines() if w.strip()))
    if not words:
        raise RecipeError(f"sea_word_list={str(path)!r} holds no words (expected one word per line).")
    return words


def sea_row_labels(recipe: Recipe, dataset, data_path: str | os.PathLike, grid: int):
    """The label source of `recipe` for the image rows of `dataset`: `(labels with .get(row_id), word list, source)`."""
    images = {row_id: image for row_id, image in zip(dataset.rows["id"], dataset.rows["image"]) if image is not None}
    source = recipe.sea_label_source
    if source in ("auto", "shapeworld"):
        folders = [Path(data_path).parent] + ([recipe.image_folder] if recipe.image_folder else [])
        scenes = read_scenes(folders)
        missing = [row_id for row_id, path in images.items() if _abs(path) not in scenes]
        if not missing:
            words = shapeworld_words()
            return ShapeWorldRowLabels(images, scenes, grid, recipe.sea_top_n, words), words, "shapeworld"
        where = f"{len(missing)} of {len(images)} image rows of {data_path} (e.g. {missing[0]!r})"
        if source == "shapeworld":
            raise RecipeError(
                f"sea_label_source='shapeworld': {where} have no scene in a {SCENES_FILE} beside the data (written "
                "by `mage data shapeworld`); use sea_label_source=clip with sea_clip_model and sea_word_list."
            )
        unset = [name for name in ("sea_clip_model", "sea_word_list") if not getattr(recipe, name)]
        if unset:
            raise RecipeError(
                f"alignment_objective='sea' needs patch labels, but {where} have no ShapeWorld scene ({SCENES_FILE} "
                f"beside the data), so they need CLIP labels: set {' and '.join(unset)} (sea_clip_model = a folder "
                "with a transformers CLIPModel, its tokenizer and image processor; sea_word_list = one word per line)."
            )
    words = read_word_list(recipe.sea_word_list)
    return ClipRowLabels(images, recipe.sea_clip_model, words, grid, recipe.sea_top_n), words, "clip"


def sea_objective_parts(recipe: Recipe, model, processor, dataset, data_path: str | os.PathLike, collator):
    """`(collator, objectives)` for `alignment_objective="sea"` (see the module docstring); registered below."""
    grid = sea_label_grid(model.config, recipe.sea_apply_to)
    if grid % recipe.sea_window:
        raise RecipeError(
            f"sea_window={recipe.sea_window} must divide the {grid}×{grid} SEA label grid of this model "
            f"(sea_apply_to={recipe.sea_apply_to!r}); e.g. sea_window=1."
        )
    per_image = (grid // recipe.sea_window) ** 2
    if per_image < 4:
        warnings.warn(
            f"sea_window={recipe.sea_window} on the {grid}×{grid} SEA label grid samples {per_image} patch(es) per "
            "image: after de-duplication a batch may hold < 2 pairs, and then SEA's loss is 0 (no negatives). "
            "A smaller sea_window (e.g. 1) samples more.",
            UserWarning,
            stacklevel=3,
        )
    labels, words, _ = sea_row_labels(recipe, dataset, data_path, grid)
    try:
        word_ids, word_mask = tokenize_words(processor.tokenizer, words)
    except ValueError as error:
        raise RecipeError(f"SEA word list: {error}") from None
    objective = SEAObjective(word_ids, word_mask, temperature=recipe.sea_temperature, window=recipe.sea_window,
                             apply_to=recipe.sea_apply_to)  # fmt: skip
    collator = SEALabelCollator(collator, labels, grid, recipe.sea_top_n)
    return collator, {"sea": (recipe.sea_weight, objective)}


register_alignment_objective("sea", sea_objective_parts)

__all__ = [
    "sea_objective_parts",
    "sea_label_grid",
    "sea_row_labels",
    "read_scenes",
    "read_word_list",
    "ShapeWorldRowLabels",
    "ClipRowLabels",
    "SCENES_FILE",
]
