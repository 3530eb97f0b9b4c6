"""VLSA's reconstructive training (ALIGNMENT_METHODS.md §2.2.2): Epigone + L_rec with a pluggable denoiser.

* `Epigone` — the paper's "low-rank MLP" (Linear → SiLU → Linear, rank 256) turning visual tokens into pseudo
  caption embeddings, plus a linear head for the pooled embedding (unspecified in the paper, ambiguity 5).
* `reconstruction_loss` — Eq. 3 with rectified-flow noising `z_t = (1−t)·z0 + t·ε`; the denoiser predicts `x0`
  (Eq. 3 as printed) or a velocity (SD3), converted by `ẑ0 = z_t − t·v̂`.
* Denoisers: `DiffusersSD3Denoiser` (real use: wraps a diffusers SD3 pipeline's VAE + MMDiT, diffusers imported lazily,
  untested offline) and the **SUBSTITUTES** `TinyAutoencoder` (for the SD3 VAE) + `TinyDenoiser` (for the SD3
  MMDiT), trained from scratch — they test the plumbing and give an "information retained" signal, but lack the
  pretrained text-to-image prior the paper relies on.
* `VLSAReconstructionObjective` — `(model, inputs, outputs) -> (loss, logs)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class Epigone(nn.Module):
    """Tokens `(B, T, d_in)` → context `(B, T, d_ctx)` via `Linear(d_in, rank) → SiLU → Linear(rank, d_ctx)`;
    global `(B, d_global)` → pooled `(B, d_pooled)` via one `Linear`. Paper: 4096 → 256 → 4096 (V5: 2,101,504
    parameters in the token MLP)."""

    def __init__(self, d_in: int, d_ctx: int, d_global: int, d_pooled: int, rank: int = 256):
        super().__init__()
        self.down = nn.Linear(d_in, rank)
        self.act = nn.SiLU()
        self.up = nn.Linear(rank, d_ctx)
        self.pooled = nn.Linear(d_global, d_pooled)

    def forward(self, tokens: torch.Tensor, global_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.up(self.act(self.down(tokens))), self.pooled(global_embedding)


def rectified_flow_noise(z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """`z_t = (1 − t)·z0 + t·ε`, `t (B,)` broadcast over the other axes."""
    t = t.view(-1, *([1] * (z0.ndim - 1))).to(z0.dtype)
    return (1 - t) * z0 + t * noise


def reconstruction_loss(
    z0: torch.Tensor,
    denoiser: nn.Module,
    context: torch.Tensor,
    pooled: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    prediction: str = "x0",
) -> torch.Tensor:
    """Eq. 3: `mean ‖z0 − ẑ0‖²` with `ẑ0 = denoiser(z_t, t, context, pooled)` ("x0") or `z_t − t·v̂` ("velocity").

    `z0`, `noise`: `(B, C, h, w)`; `t`: `(B,)` in [0, 1]; `context (B, T, d)`, `pooled (B, p)`. Returns a scalar.
    """
    if prediction not in ("x0", "velocity"):
        raise ValueError(f"rec_prediction={prediction!r}; expected 'x0' or 'velocity'.")
    z_t = rectified_flow_noise(z0, t, noise)
    out = denoiser(z_t, t, context, pooled)
    if prediction == "velocity":
        out = z_t - t.view(-1, *([1] * (z0.ndim - 1))).to(z0.dtype) * out
    return F.mse_loss(out.float(), z0.float())


# ------------------------------------------------------------------------------------------- substitutes (tiny)
class TinyAutoencoder(nn.Module):
    """**SUBSTITUTE for the SD3 VAE**: `(B, 3, S, S)` in [-1, 1] → latents `(B, C, S/8, S/8)` → image.

    Three stride-2 convolutions each way; trained from scratch with an L2 reconstruction loss (`train_autoencoder`).
    """

    def __init__(self, latent_channels: int = 4, width: int = 32):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.SiLU(), nn.Conv2d(width, width, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(width, latent_channels, 4, 2, 1),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(latent_channels, width, 4, 2, 1), nn.SiLU(), nn.ConvTranspose2d(width, width, 4, 2, 1),
            nn.SiLU(), nn.ConvTranspose2d(width, 3, 4, 2, 1),
        )  # fmt: skip

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of `t (B,)` in [0, 1] (scaled by 1000, as diffusion models do) → `(B, dim)`."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class TinyDenoiserBlock(nn.Module):
    """Self-attention over latent patches, cross-attention to the context, MLP; AdaLN shift/scale from the
    conditioning vector (timestep + pooled)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm3 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.ada = nn.Linear(width, 2 * width)

    def forward(self, x: torch.Tensor, context: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(cond)[:, None].chunk(2, dim=-1)
        h = self.norm1(x) * (1 + scale) + shift
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        x = x + self.cross_attn(self.norm2(x), context, context, need_weights=False)[0]
        return x + self.mlp(self.norm3(x))


class TinyDenoiser(nn.Module):
    """**SUBSTITUTE for the SD3 MMDiT**: a tiny conditional DiT predicting `x0` from `z_t (B, C, h, w)`, `t (B,)`,
    `context (B, T, ctx_dim)` (cross-attention) and `pooled (B, pooled_dim)` (AdaLN). Trained from scratch."""

    def __init__(self, latent_channels: int, latent_size: int, ctx_dim: int, pooled_dim: int, width: int = 64,
                 layers: int = 2, heads: int = 4):  # fmt: skip
        super().__init__()
        self.width = width
        self.inp = nn.Linear(latent_channels, width)
        self.pos = nn.Parameter(torch.randn(1, latent_size * latent_size, width) * 0.02)
        self.ctx = nn.Linear(ctx_dim, width)
        self.cond = nn.Sequential(nn.Linear(width + pooled_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(TinyDenoiserBlock(width, heads) for _ in range(layers))
        self.out = nn.Linear(width, latent_channels)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        batch, channels, h, w = z_t.shape
        x = self.inp(z_t.flatten(2).transpose(1, 2)) + self.pos
        cond = self.cond(torch.cat([timestep_embedding(t, self.width), pooled.float()], dim=-1))
        ctx = self.ctx(context.float())
        for block in self.blocks:
            x = block(x, ctx, cond)
        return self.out(x).transpose(1, 2).reshape(batch, channels, h, w)


class DiffusersSD3Denoiser(nn.Module):
    """Real-use backend: a diffusers `StableDiffusion3Pipeline`'s VAE + `SD3Transformer2DModel` (velocity prediction).

    `encode(images in [-1, 1])` → `(latent − shift) · scale`; `forward(z_t, t, context (B, T, 4096), pooled (B, 2048))`
    → velocity. Needs `pip install diffusers` and SD3-medium weights (never in tests; the class only duck-types the
    pipeline's `vae` and `transformer`).
    """

    prediction = "velocity"

    def __init__(self, pipeline):
        super().__init__()
        self.vae, self.transformer = pipeline.vae, pipeline.transformer

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> DiffusersSD3Denoiser:
        try:
            from diffusers import StableDiffusion3Pipeline  # optional
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("rec_backend='sd3' needs diffusers: pip install diffusers") from error
        return cls(StableDiffusion3Pipeline.from_pretrained(name_or_path, **kwargs))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        latents = self.vae.encode(images.to(self.vae.dtype)).latent_dist.sample()
        config = self.vae.config
        return (latents - getattr(config, "shift_factor", 0.0)) * config.scaling_factor

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        dtype = self.transformer.dtype
        return self.transformer(
            hidden_states=z_t.to(dtype),
            encoder_hidden_states=context.to(dtype),
            pooled_projections=pooled.to(dtype),
            timestep=t * 1000.0,
        ).sample


def train_autoencoder(
    autoencoder: TinyAutoencoder,
    images: torch.Tensor,
    steps: int = 200,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
) -> list[float]:
    """Train the substitute autoencoder on `images (N, 3, S, S)` in [-1, 1]; returns the loss per step."""

    def loss_of(batch: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(autoencoder(batch), batch)

    return train_on_images(autoencoder, loss_of, images, steps, batch_size, lr, seed)


def train_on_images(
    model: nn.Module,
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> list[float]:
    """Train a substitute image model (`train_autoencoder`, cognition's `train_vqvae`) with AdamW: each of `steps`
    steps draws `batch_size` of `images (N, 3, S, S)` with replacement (seeded by `seed`) and minimises
    `loss_of(batch)`; returns the loss per step."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        batch = images[torch.randint(0, images.shape[0], (batch_size,), generator=generator)]
        loss = loss_of(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


class VLSAReconstructionObjective(nn.Module):
    """VLSA's L_rec as an objective `(model, inputs, outputs) -> (loss, logs)`.

    Condition: Epigone(V'' = `outputs.image_hidden_states` (B_img, Q, D_l), P) where P is the SA-Perceiver's global
    embedding when the projector is `sa_perceiver`, else the mean of V'' over tokens (proposal). Target:
    `z0 = encoder(pixel_values)` under `no_grad` (frozen VAE). `t ~ U(0, 1)` and ε come from `self.generator`.
    Trainable here: Epigone and the denoiser (`train_denoiser=True`, the substitute must learn from scratch).
    """

    def __init__(self, encoder, denoiser: nn.Module, d_tokens: int, d_global: int, ctx_dim: int, pooled_dim: int,
                 rank: int = 256, prediction: str = "x0", train_denoiser: bool = True):  # fmt: skip
        super().__init__()
        self.encoder = encoder
        self.denoiser = denoiser
        self.epigone = Epigone(d_tokens, ctx_dim, d_global, pooled_dim, rank)
        self.prediction = getattr(denoiser, "prediction", prediction)
        for parameter in self.denoiser.parameters():
            parameter.requires_grad_(train_denoiser)
        if isinstance(encoder, nn.Module):
            encoder.requires_grad_(False)
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, model: nn.Module, inputs: dict, outputs) -> tuple[torch.Tensor, dict[str, float]]:
        tokens = outputs.image_hidden_states
        projector = getattr(model, "multi_modal_projector", None)
        global_embedding = getattr(projector, "last_global_embedding", None)
        if global_embedding is None or global_embedding.shape[0] != tokens.shape[0]:
            global_embedding = tokens.mean(dim=1)
        context, pooled = self.epigone(tokens.float(), global_embedding.float())
        encode = self.encoder.encode if hasattr(self.encoder, "encode") else self.encoder
        with torch.no_grad():
            z0 = encode(inputs["pixel_values"].float())
        t = torch.rand(z0.shape[0], generator=self.generator).to(z0.device)
        noise = torch.randn(z0.shape, generator=self.generator).to(z0.device)
        loss = reconstruction_loss(z0, self.denoiser, context, pooled, t, noise, self.prediction)
        return loss, {}


__all__ = [
    "Epigone",
    "rectified_flow_noise",
    "reconstruction_loss",
    "TinyAutoencoder",
    "TinyDenoiser",
    "DiffusersSD3Denoiser",
    "timestep_embedding",
    "train_autoencoder",
    "train_on_images",
    "VLSAReconstructionObjective",
]
