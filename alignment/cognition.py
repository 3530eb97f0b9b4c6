"""VLSA's cognition-alignment data (ALIGNMENT_METHODS.md §2.2.3): questions whose answers are an image's VQ codes
(Eq. 5) or the RGB values of a region, inserted into LLaVA-format conversations and learnt with the ordinary LM loss.

* `vq_indices` — Eq. 5 read as the standard L2 argmin (the printed "argmin of a product" is ambiguity 6; test V7).
* `PaletteQuantizer` — **SUBSTITUTE 1** for the Tang et al. VQ-VAE: g×g cells, latent = cell-mean RGB, codebook =
  ShapeWorld palette + background. Training-free, exactly recomputable (colour only, not semantic).
* `TinyVQVAE` — **SUBSTITUTE 2**: a small VQ-VAE (straight-through + commitment loss) trained on ShapeWorld images by
  `train_vqvae`; learned, deterministic given the checkpoint.
* `pixel_target` — "the RGB values within a quarter of the area with this vertex as the top-left corner",
  average-pooled to a `grid × grid` block (the paper's down-sampling is unstated, ambiguity 7).
* `format_*` / `parse_*` — the fixed answer serialisation, round-trip exact.
* `insert_cognition_turns` — adds such Q&A turns at random conversation positions of a LLaVA row.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn

from shapeworld.world import BACKGROUND, COLOURS

from .vlsa import train_on_images

VQ_QUESTION = "List the {grid}x{grid} visual codes of the image, row by row."
PIXEL_QUESTION = (
    "Give the RGB values of the region whose top-left corner is at ({x}, {y}) and which covers a quarter of the image, "
    "as a {grid}x{grid} grid, row by row."
)


def vq_indices(latents: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Eq. 5 as an L2 argmin: `latents (..., d')`, `codebook (s, d')` → `(...)` code indices."""
    distances = (latents.unsqueeze(-2).float() - codebook.float()).pow(2).sum(-1)
    return distances.argmin(-1)


class PaletteQuantizer:
    """**SUBSTITUTE** VQ model: cell-mean RGB of a `grid × grid` partition, nearest palette colour (L2).

    `codebook` rows are RGB in 0..255; `names` label them. `encode(image (H, W, 3) uint8)` → `(grid·grid,)` codes.
    """

    def __init__(self, codebook: Sequence[Sequence[int]], names: Sequence[str], grid: int = 8):
        self.codebook = torch.tensor(codebook, dtype=torch.float32)
        self.names = list(names)
        self.grid = grid

    @classmethod
    def shapeworld(cls, grid: int = 8) -> PaletteQuantizer:
        return cls([*COLOURS.values(), BACKGROUND], [*COLOURS, "background"], grid)

    def encode(self, image) -> torch.Tensor:
        pixels = torch.as_tensor(
            np.array(image.convert("RGB") if hasattr(image, "convert") else image), dtype=torch.float32
        )
        cells = F.adaptive_avg_pool2d(pixels.permute(2, 0, 1)[None], self.grid)[0]  # (3, g, g)
        return vq_indices(cells.permute(1, 2, 0).reshape(-1, 3), self.codebook)


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation with a straight-through gradient and the VQ-VAE codebook + commitment losses."""

    def __init__(self, num_codes: int = 64, dim: int = 16, beta: float = 0.25):
        super().__init__()
        self.codebook = nn.Embedding(num_codes, dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / num_codes, 1.0 / num_codes)
        self.beta = beta

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`z (B, d, h, w)` → `(quantised (B, d, h, w), codes (B, h, w), loss)`."""
        flat = z.permute(0, 2, 3, 1)
        codes = vq_indices(flat, self.codebook.weight)
        quantised = self.codebook(codes).permute(0, 3, 1, 2)
        loss = F.mse_loss(quantised, z.detach()) + self.beta * F.mse_loss(z, quantised.detach())
        return z + (quantised - z).detach(), codes, loss


class TinyVQVAE(nn.Module):
    """**SUBSTITUTE** for the Tang et al. VQ-VAE: 2 stride-2 convs → 16-d codes (64 codes) → 2 transposed convs.

    A 64-px image gives a 16×16 code grid; `encode_codes(images (B, 3, S, S) in [-1, 1])` → `(B, (S/4)²)`.
    """

    def __init__(self, num_codes: int = 64, dim: int = 16, width: int = 32):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, width, 4, 2, 1), nn.SiLU(), nn.Conv2d(width, dim, 4, 2, 1))
        self.quantizer = VectorQuantizer(num_codes, dim)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(dim, width, 4, 2, 1), nn.SiLU(), nn.ConvTranspose2d(width, 3, 4, 2, 1)
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        quantised, _, vq_loss = self.quantizer(self.encoder(images))
        return self.decoder(quantised), vq_loss

    @torch.no_grad()
    def encode_codes(self, images: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.encoder(images))[1].flatten(1)


def train_vqvae(
    model: TinyVQVAE, images: torch.Tensor, steps: int = 200, batch_size: int = 32, lr: float = 2e-3, seed: int = 0
) -> list[float]:
    """Train the substitute VQ-VAE on `images (N, 3, S, S)` in [-1, 1]; returns the total loss per step."""

    def loss_of(batch: torch.Tensor) -> torch.Tensor:
        recon, vq_loss = model(batch)
        return F.mse_loss(recon, batch) + vq_loss

    return train_on_images(model, loss_of, images, steps, batch_size, lr, seed)


class VQVAEQuantizer:
    """A trained `TinyVQVAE` used as a quantizer: `grid` and `encode(image) -> (grid²,)` codes, like
    `PaletteQuantizer`. Images are resized to `image_size` (a multiple of 4); the code grid is `image_size / 4`."""

    def __init__(self, model: TinyVQVAE, image_size: int = 32):
        self.model, self.image_size, self.grid = model.eval(), image_size, image_size // 4

    def encode(self, image) -> torch.Tensor:
        pixels = torch.as_tensor(
            np.array(image.convert("RGB") if hasattr(image, "convert") else image), dtype=torch.float32
        )
        pixels = F.interpolate(pixels.permute(2, 0, 1)[None], size=self.image_size, mode="area") / 127.5 - 1.0
        return self.model.encode_codes(pixels)[0]


def load_images(paths: Sequence[str], size: int) -> torch.Tensor:
    """Images resized to `size × size`, as `(N, 3, size, size)` in [-1, 1]; unreadable files are skipped and counted
    in the returned tensor's absence (a `ValueError` names the first one when none can be read)."""
    tensors, bad = [], []
    for path in paths:
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32)
        except (OSError, UnidentifiedImageError) as error:
            bad.append(f"{path}: {error}")
            continue
        tensors.append(torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0)
    if not tensors:
        raise ValueError(f"no readable image among {len(paths)} (first error: {bad[0] if bad else 'no paths'}).")
    return torch.stack(tensors)


def build_cognition_dataset(
    data_dir: str,
    out_path: str,
    quantizer: str = "palette",
    split: str = "train",
    source: str = "stage2_instructions.json",
    prob_vq: float = 0.1,
    prob_pixel: float = 0.1,
    vq_grid: int = 8,
    pixel_grid: int = 2,
    seed: int = 0,
    vqvae_steps: int = 300,
) -> dict:
    """VLSA cognition-alignment data from a ShapeWorld folder: `data_dir/<split>/<source>` with VQ-code and pixel
    questions inserted, written to `out_path` (image paths made absolute). `quantizer="palette"` (substitute 1) or
    `"tiny_vqvae"` (substitute 2, trained here on the split's images for `vqvae_steps`). Returns counts."""
    folder = os.path.join(data_dir, split)
    with open(os.path.join(folder, source), encoding="utf-8") as handle:
        rows = json.load(handle)
    images = {row["image"]: os.path.join(folder, row["image"]) for row in rows if row.get("image")}
    if quantizer == "palette":
        model = PaletteQuantizer.shapeworld(vq_grid)
    elif quantizer == "tiny_vqvae":
        torch.manual_seed(seed)
        vqvae = TinyVQVAE()
        train_vqvae(vqvae, load_images(sorted(images.values())[:2000], 4 * vq_grid), steps=vqvae_steps, seed=seed)
        model = VQVAEQuantizer(vqvae, 4 * vq_grid)
    else:
        raise ValueError(f"quantizer={quantizer!r}; expected 'palette' or 'tiny_vqvae'.")
    rng = random.Random(seed)
    out, counts = [], {"rows": 0, "vq_turns": 0, "pixel_turns": 0, "skipped": 0}
    for row in rows:
        if not row.get("image"):
            out.append(row)
            continue
        try:
            with Image.open(images[row["image"]]) as image:
                pixels = np.asarray(image.convert("RGB"))
            new = insert_cognition_turns(row, pixels, model, rng, prob_vq, prob_pixel, pixel_grid)
        except (OSError, ValueError):
            counts["skipped"] += 1
            continue
        added = [t["value"] for t in new["conversations"] if t["from"] == "gpt"]
        counts["vq_turns"] += sum(a.startswith(f"{model.grid}x{model.grid} codes:") for a in added)
        counts["pixel_turns"] += sum(" RGB: " in a for a in added)
        out.append({**new, "image": images[row["image"]]})
        counts["rows"] += 1
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump(out, handle, indent=1)
    return counts


# ------------------------------------------------------------------------------------------------ pixel targets
def pixel_target(image: np.ndarray, vertex_yx: tuple[int, int], grid: int) -> np.ndarray:
    """The `H/2 × W/2` region with top-left corner `vertex_yx`, average-pooled to `(grid, grid, 3)` uint8.

    The vertex must lie in the top-left quadrant (so the region fits): a `ValueError` otherwise.
    """
    height, width = image.shape[:2]
    y, x = vertex_yx
    if not (0 <= y <= height - height // 2 and 0 <= x <= width - width // 2):
        raise ValueError(f"vertex {vertex_yx} puts the quarter region outside the {height}×{width} image.")
    region = torch.tensor(np.array(image[y : y + height // 2, x : x + width // 2]), dtype=torch.float32)
    pooled = F.adaptive_avg_pool2d(region.permute(2, 0, 1)[None], grid)[0].permute(1, 2, 0)
    return pooled.round().clamp(0, 255).to(torch.uint8).numpy()


# -------------------------------------------------------------------------------------------- serialisation
def format_vq_answer(codes: Sequence[int], grid: int) -> str:
    """`"8x8 codes: 12 7 7 3 …"` (row-major)."""
    if len(codes) != grid * grid:
        raise ValueError(f"{len(codes)} codes do not fill a {grid}x{grid} grid.")
    return f"{grid}x{grid} codes: " + " ".join(str(int(c)) for c in codes)


def parse_vq_answer(text: str) -> list[int]:
    match = re.fullmatch(r"\s*(\d+)x(\d+) codes:((?: \d+)+)\s*", text)
    if not match:
        raise ValueError(f"not a VQ answer: {text[:80]!r}")
    codes = [int(c) for c in match.group(3).split()]
    if len(codes) != int(match.group(1)) * int(match.group(2)):
        raise ValueError(f"VQ answer declares {match.group(1)}x{match.group(2)} but holds {len(codes)} codes.")
    return codes


def format_pixel_answer(pixels: np.ndarray) -> str:
    """`"2x2 RGB: (255,0,0) (0,255,0) …"` (row-major)."""
    grid = pixels.shape[0]
    cells = " ".join(f"({int(r)},{int(g)},{int(b)})" for r, g, b in pixels.reshape(-1, 3))
    return f"{grid}x{grid} RGB: {cells}"


def parse_pixel_answer(text: str) -> np.ndarray:
    match = re.fullmatch(r"\s*(\d+)x(\d+) RGB:((?: \(\d+,\d+,\d+\))+)\s*", text)
    if not match:
        raise ValueError(f"not a pixel answer: {text[:80]!r}")
    values = [tuple(int(v) for v in cell.split(",")) for cell in re.findall(r"\((\d+,\d+,\d+)\)", match.group(3))]
    rows, cols = int(match.group(1)), int(match.group(2))
    if len(values) != rows * cols:
        raise ValueError(f"pixel answer declares {rows}x{cols} but holds {len(values)} cells.")
    return np.array(values, dtype=np.uint8).reshape(rows, cols, 3)


# ---------------------------------------------------------------------------------------------------- insertion
def cognition_turns(
    image, quantizer, rng: random.Random, prob_vq: float, prob_pixel: float, pixel_grid: int = 2
) -> list[tuple[str, str]]:
    """0–2 (question, answer) pairs for `image` (PIL or `(H, W, 3)` uint8), each drawn with its probability."""
    pixels = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    turns = []
    if rng.random() < prob_vq:
        grid = quantizer.grid
        turns.append((VQ_QUESTION.format(grid=grid), format_vq_answer(quantizer.encode(pixels).tolist(), grid)))
    if rng.random() < prob_pixel:
        height, width = pixels.shape[:2]
        y, x = rng.randint(0, height - height // 2), rng.randint(0, width - width // 2)
        answer = format_pixel_answer(pixel_target(pixels, (y, x), pixel_grid))
        turns.append((PIXEL_QUESTION.format(x=x, y=y, grid=pixel_grid), answer))
    return turns


def insert_cognition_turns(
    row: dict, image, quantizer, rng: random.Random, prob_vq: float = 0.1, prob_pixel: float = 0.1, pixel_grid: int = 2
) -> dict:
    """A copy of a LLaVA row (`{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]}`) with cognition
    turns inserted at random turn boundaries after the first exchange (which keeps the `<image>`). Unchanged when no
    turn is drawn. A row whose conversation is not human/gpt alternating is a `ValueError` naming its id.
    """
    conversations = list(row.get("conversations", []))
    roles = [turn.get("from") for turn in conversations]
    if len(roles) < 2 or len(roles) % 2 or roles != ["human", "gpt"] * (len(roles) // 2):
        raise ValueError(f"row {row.get('id')!r}: conversations must alternate human/gpt, got {roles}.")
    new = cognition_turns(image, quantizer, rng, prob_vq, prob_pixel, pixel_grid)
    for question, answer in new:
        position = 2 * rng.randint(1, len(conversations) // 2)
        conversations[position:position] = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {**row, "conversations": conversations}


__all__ = [
    "vq_indices",
    "PaletteQuantizer",
    "VectorQuantizer",
    "TinyVQVAE",
    "train_vqvae",
    "pixel_target",
    "format_vq_answer",
    "parse_vq_answer",
    "format_pixel_answer",
    "parse_pixel_answer",
    "cognition_turns",
    "VQVAEQuantizer",
    "load_images",
    "build_cognition_dataset",
    "insert_cognition_turns",
]
