# Copyright 2026 The MAGE-HF authors. Licensed under the Apache License, Version 2.0.
"""All projectors between the vision tower and the LM: one base class, one registry.

| `projector_type` | tokens per image | source |
|---|---|---|
| `linear`        | N_p (one per patch) | LLaVA-1.0 |
| `mlp2x_gelu`    | N_p (one per patch) | LLaVA-1.5 (llava-hf weight names) |
| `resampler`     | Q (any Q ≥ 1; square for the ablation) | Perceiver Resampler (Flamingo; Honeybee's baseline) |
| `c_abstractor`  | Q (perfect square ≤ N_p) | Honeybee C-Abstractor: ResNet (RegNet bottleneck) blocks → adaptive pool → blocks |
| `ian`           | Q (perfect square ≤ N_p) | MAGE (VAB + SEB, in `ian.py`) |
| `vab`           | N_p (one per patch) | the IAN without its SEB (ablation, in `ian.py`) |
| `sa_perceiver`  | Q (perfect square ≤ N_p) | VLSA's SA-Perceiver (Eqs. 1–2) → LLaVA-Next MLP |

Every projector maps `image_features (B, N, D_v)` (+ optional `pixel_values (B, 3, H, W)`) to `(B, T, D_l)`.
Hyper-parameters that `MageConfig` has no named field for are read from extra config attributes (any `MageConfig(...,
resampler_num_layers=3)` keyword is stored in `config.json`); each class documents its own, with defaults.

Remote code: imports only torch, transformers and `configuration_mage.py` (`ian.py` imports this file and holds the
builder, which knows every built-in projector).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from .configuration_mage import MageConfig

PROJECTOR_REGISTRY: dict[str, type[nn.Module]] = {}


def register_projector(name: str, query_based: bool | None = None):
    """Class decorator: registers a projector under `name` (its `projector_type`); `query_based` overrides the
    class attribute when given."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in PROJECTOR_REGISTRY and PROJECTOR_REGISTRY[name] is not cls:
            raise ValueError(f"projector_type {name!r} is already registered by {PROJECTOR_REGISTRY[name].__name__}.")
        cls.projector_type = name
        if query_based is not None:
            cls.query_based = query_based
        PROJECTOR_REGISTRY[name] = cls
        return cls

    return decorator


def _or(value, default):
    """`value`, or `default` when it is None (a config field whose default is derived from another)."""
    return default if value is None else value


def _grid_side(count: int) -> int:
    side = math.isqrt(count)
    if side * side != count:
        raise ValueError(f"expected a square patch grid, got {count} patch tokens.")
    return side


class MageProjector(nn.Module):
    """Base class of every projector.

    Subclasses set `query_based` (True when the token count is `config.num_query_tokens`, not the patch count),
    implement `forward(image_features (B, N, D_v), pixel_values (B, 3, H, W) | None) -> (B, T, D_l)` and may extend
    `check_config` (called before building; raises a `ValueError` naming the field).
    """

    projector_type: ClassVar[str] = ""
    query_based: ClassVar[bool] = False
    # > 1: the projector takes images of `hires_scale × tower size` and `MageModel.get_image_features` passes it the
    # snapshot's features plus `hires_features` of the `hires_scale²` tiles (VLSA's SA-Perceiver only)
    hires_scale: int = 1
    square_queries: ClassVar[bool] = True  # query count must be a perfect square
    max_queries_is_patches: ClassVar[bool] = True  # query count must be <= the patch count

    @classmethod
    def check_config(cls, config: MageConfig) -> None:
        if not cls.query_based:
            return
        q = config.num_query_tokens
        if not isinstance(q, int) or q < 1:
            raise ValueError(
                f"MageConfig.num_query_tokens={q!r} must be a positive int for projector_type={cls.projector_type!r}."
            )
        if cls.square_queries and math.isqrt(q) ** 2 != q:
            raise ValueError(
                f"MageConfig.num_query_tokens={q} must be a perfect square (e.g. 64, 144, 256) for "
                f"projector_type={cls.projector_type!r}: its queries lie on a square grid."
            )
        if cls.max_queries_is_patches and q > config.num_patches:
            raise ValueError(
                f"MageConfig.num_query_tokens={q} is larger than the patch grid ({config.num_patches} patches) for "
                f"projector_type={cls.projector_type!r}; expected a perfect square <= {config.num_patches}."
            )

    @classmethod
    def output_tokens(cls, config: MageConfig) -> int:
        """Tokens per image this projector emits (= `config.image_seq_length`)."""
        if cls.query_based:
            return config.num_query_tokens
        return config.num_patches + (1 if config.vision_feature_select_strategy == "full" else 0)

    def patch_tokens(self, image_features: torch.Tensor, num_patches: int) -> torch.Tensor:
        """The last `num_patches` tokens (drops a CLS kept by the "full" strategy): `(B, N_p, D)`."""
        return image_features[:, -num_patches:]

    @staticmethod
    def to_grid(tokens: torch.Tensor) -> torch.Tensor:
        """`(B, g·g, D)` → `(B, D, g, g)`."""
        batch, count, width = tokens.shape
        side = _grid_side(count)
        return tokens.transpose(1, 2).reshape(batch, width, side, side)

    @staticmethod
    def from_grid(grid: torch.Tensor) -> torch.Tensor:
        """`(B, D, h, w)` → `(B, h·w, D)` (row-major)."""
        return grid.flatten(2).transpose(1, 2)


# --------------------------------------------------------------------------------------------- LLaVA projectors
@register_projector("linear")
class MageLinearProjector(MageProjector):
    """LLaVA-1.0 projector: one linear layer, `(B, N, D_v)` → `(B, N, D_l)`."""

    def __init__(self, config: MageConfig):
        super().__init__()
        self.linear_1 = nn.Linear(config.vision_config.hidden_size, config.text_config.hidden_size)

    def forward(self, image_features: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear_1(image_features)


@register_projector("mlp2x_gelu")
class MageMLPProjector(MageProjector):
    """LLaVA-1.5 `mlp2x_gelu` projector, `(B, N, D_v)` → `(B, N, D_l)`.

    Parameter names equal `LlavaMultiModalProjector`'s (`linear_1`, `linear_2`) so llava-hf weights load unchanged.
    """

    def __init__(self, config: MageConfig):
        super().__init__()
        self.linear_1 = nn.Linear(config.vision_config.hidden_size, config.text_config.hidden_size)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(config.text_config.hidden_size, config.text_config.hidden_size)

    def forward(self, image_features: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(image_features)))


# ------------------------------------------------------------------------------------------ Perceiver resampler
class PerceiverResamplerLayer(nn.Module):
    """Flamingo's Perceiver Resampler layer: latents attend to `[features; latents]`, then a feed-forward block.

    `latents (B, Q, H)`, `features (B, N, H)` → `(B, Q, H)`; pre-norm, both sub-blocks residual, SDPA attention.
    """

    def __init__(self, hidden: int, num_heads: int, mlp_ratio: int, act: str):
        super().__init__()
        self.num_heads = num_heads
        self.latent_norm = nn.LayerNorm(hidden)
        self.feature_norm = nn.LayerNorm(hidden)
        self.q_proj = nn.Linear(hidden, hidden, bias=False)
        self.k_proj = nn.Linear(hidden, hidden, bias=False)
        self.v_proj = nn.Linear(hidden, hidden, bias=False)
        self.o_proj = nn.Linear(hidden, hidden, bias=False)
        self.mlp_norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, mlp_ratio * hidden, bias=False)
        self.act = ACT2FN[act]
        self.fc2 = nn.Linear(mlp_ratio * hidden, hidden, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)

    def forward(self, latents: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        normed_latents = self.latent_norm(latents)
        context = torch.cat([self.feature_norm(features), normed_latents], dim=1)
        attended = F.scaled_dot_product_attention(
            self._heads(self.q_proj(normed_latents)),
            self._heads(self.k_proj(context)),
            self._heads(self.v_proj(context)),
        )
        latents = latents + self.o_proj(attended.transpose(1, 2).reshape(latents.shape))
        return latents + self.fc2(self.act(self.fc1(self.mlp_norm(latents))))


@register_projector("resampler")
class MagePerceiverResampler(MageProjector):
    """Perceiver Resampler (Flamingo, Alayrac et al. 2022; the "Resampler" row of MAGE's Table 4).

    `Linear(D_v, H)` → Q learned latents × `resampler_num_layers` [`PerceiverResamplerLayer`] → `LayerNorm` →
    `Linear(H, D_l)`. `(B, N, D_v)` → `(B, Q, D_l)`; all N tokens are attended (CLS included when kept).

    Extra config attributes: `resampler_hidden_size` (H, default D_v), `resampler_num_layers` (default
    `seb_num_layers`, for equal depth with the IAN), `resampler_num_heads` (default `seb_num_heads`),
    `resampler_mlp_ratio` (default 4), `resampler_pos_emb` (default False, as Honeybee's resampler config: a learned
    position embedding added to the N input tokens).
    """

    query_based = True
    square_queries = True  # the resampler itself works for any Q; the ablation's query counts are squares
    max_queries_is_patches = False

    @classmethod
    def check_config(cls, config: MageConfig) -> None:
        super().check_config(config)
        hidden = _or(config.resampler_hidden_size, config.vision_config.hidden_size)
        heads = _or(config.resampler_num_heads, config.seb_num_heads)
        if heads < 1 or hidden % heads:
            raise ValueError(
                f"MageConfig.resampler_num_heads={heads} must divide resampler_hidden_size={hidden} "
                "(projector_type='resampler')."
            )

    def __init__(self, config: MageConfig):
        self.check_config(config)
        super().__init__()
        hidden = _or(config.resampler_hidden_size, config.vision_config.hidden_size)
        heads = _or(config.resampler_num_heads, config.seb_num_heads)
        layers = _or(config.resampler_num_layers, config.seb_num_layers)
        mlp_ratio = config.resampler_mlp_ratio
        self.input_proj = nn.Linear(config.vision_config.hidden_size, hidden)
        self.latents = nn.Parameter(torch.randn(1, config.num_query_tokens, hidden) * 0.02)
        self.position_embedding = None
        if config.resampler_pos_emb:
            tokens = config.num_patches + (1 if config.vision_feature_select_strategy == "full" else 0)
            self.position_embedding = nn.Parameter(torch.zeros(1, tokens, config.vision_config.hidden_size))
        self.layers = nn.ModuleList(
            PerceiverResamplerLayer(hidden, heads, mlp_ratio, config.projector_hidden_act) for _ in range(layers)
        )
        self.final_norm = nn.LayerNorm(hidden)
        self.output_proj = nn.Linear(hidden, config.text_config.hidden_size)

    def forward(self, image_features: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        if self.position_embedding is not None:
            image_features = image_features + self.position_embedding[:, -image_features.shape[1] :]
        features = self.input_proj(image_features)
        latents = self.latents.expand(features.shape[0], -1, -1).to(features.dtype)
        for layer in self.layers:
            latents = layer(latents, features)
        return self.output_proj(self.final_norm(latents))


# ----------------------------------------------------------------------------------------------- C-Abstractor
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (timm's `LayerNorm2d`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNormAct(nn.Sequential):
    """`Conv2d(bias=False)` → `LayerNorm2d` → optional activation (timm's `ConvNormAct`, "same" padding)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, groups: int = 1, act: bool = True):
        modules = [
            nn.Conv2d(in_chs, out_chs, kernel_size, padding=kernel_size // 2, groups=groups, bias=False),
            LayerNorm2d(out_chs),
        ]
        if act:
            modules.append(nn.SiLU())
        super().__init__(*modules)


class SqueezeExcite(nn.Module):
    """timm's `SEModule`: gate = sigmoid(fc2(SiLU(fc1(mean_hw x)))), output `x * gate`."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, kernel_size=1)
        self.act = nn.SiLU()
        self.fc2 = nn.Conv2d(reduced, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class RegNetBottleneck(nn.Module):
    """timm's RegNet `Bottleneck` as Honeybee configures it (bottle ratio 1, group size 1 = depth-wise 3×3,
    SE ratio 0.25 of the input channels, SiLU, LayerNorm2d, 1×1 conv shortcut when the width changes).

    `(B, C_in, h, w)` → `(B, C_out, h, w)`.
    """

    def __init__(self, in_chs: int, out_chs: int, se_ratio: float = 0.25):
        super().__init__()
        self.conv1 = ConvNormAct(in_chs, out_chs, 1)
        self.conv2 = ConvNormAct(out_chs, out_chs, 3, groups=out_chs)
        self.se = SqueezeExcite(out_chs, max(1, int(round(in_chs * se_ratio))))
        self.conv3 = ConvNormAct(out_chs, out_chs, 1, act=False)
        self.shortcut = ConvNormAct(in_chs, out_chs, 1, act=False) if in_chs != out_chs else nn.Identity()
        self.act3 = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act3(self.conv3(self.se(self.conv2(self.conv1(x)))) + self.shortcut(x))


class RegStage(nn.Sequential):
    """`depth` bottlenecks, the first changing the width `in_chs → out_chs` (timm's `RegStage`, stride 1)."""

    def __init__(self, depth: int, in_chs: int, out_chs: int):
        super().__init__(*(RegNetBottleneck(in_chs if i == 0 else out_chs, out_chs) for i in range(depth)))


@register_projector("c_abstractor")
class MageCAbstractor(MageProjector):
    """Honeybee's C-Abstractor (Cha et al. 2024, `honeybee/projectors/projectors.py`), without timm/einops.

    patch tokens (+ learned position embedding) → grid `(B, D_v, g, g)` → `RegStage(depth, D_v → H)` →
    `AdaptiveAvgPool2d(√Q)` → `RegStage(depth, H → H)` → tokens → readout MLP (`Linear(H, D_l)` [→ SiLU →
    `Linear(D_l, D_l)`]*). `(B, N, D_v)` → `(B, Q, D_l)`. CLS tokens are dropped (the grid is the last N_p tokens).

    Extra config attributes (Honeybee's `c-abs.yaml` defaults): `c_abstractor_hidden_size` (H, default D_v; Honeybee
    1024 = CLIP-L's width), `c_abstractor_depth` (3), `c_abstractor_mlp_depth` (2), `c_abstractor_pos_emb` (True).
    """

    query_based = True

    def __init__(self, config: MageConfig):
        self.check_config(config)
        super().__init__()
        vision_hidden = config.vision_config.hidden_size
        hidden = _or(config.c_abstractor_hidden_size, vision_hidden)
        depth = config.c_abstractor_depth
        mlp_depth = config.c_abstractor_mlp_depth
        self.num_patches = config.num_patches
        self.position_embedding = (
            nn.Parameter(torch.zeros(1, config.num_patches, vision_hidden)) if config.c_abstractor_pos_emb else None
        )
        side = math.isqrt(config.num_query_tokens)
        if depth:
            self.net = nn.Sequential(
                RegStage(depth, vision_hidden, hidden), nn.AdaptiveAvgPool2d(side), RegStage(depth, hidden, hidden)
            )
            readout_in = hidden
        else:
            self.net = nn.AdaptiveAvgPool2d(side)
            readout_in = vision_hidden
        out = config.text_config.hidden_size
        layers: list[nn.Module] = [nn.Linear(readout_in, out)]
        for _ in range(1, mlp_depth):
            layers += [nn.SiLU(), nn.Linear(out, out)]
        self.readout = nn.Sequential(*layers)

    def forward(self, image_features: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        patches = self.patch_tokens(image_features, self.num_patches)
        if self.position_embedding is not None:
            patches = patches + self.position_embedding.to(patches.dtype)
        return self.readout(self.from_grid(self.net(self.to_grid(patches))))


# ----------------------------------------------------------------------------------------- VLSA SA-Perceiver
def compute_tile_grid(height: int, width: int, tile: int) -> tuple[int, int, int, int]:
    """VLSA §3.1: pad to the smallest multiples of `tile`. Returns `(padded_h, padded_w, rows, cols)`;
    the tile count is `rows * cols`. Example: `(500, 700, 336)` → `(672, 1008, 2, 3)`."""
    if height < 1 or width < 1 or tile < 1:
        raise ValueError(f"compute_tile_grid needs positive sizes; got height={height}, width={width}, tile={tile}.")
    rows, cols = -(-height // tile), -(-width // tile)
    return rows * tile, cols * tile, rows, cols


def split_into_tiles(image: torch.Tensor, tile: int) -> torch.Tensor:
    """Zero-pad `(3, H, W)` (bottom/right) to the tile grid and cut it row-major: `(rows·cols, 3, tile, tile)`."""
    _, height, width = image.shape
    padded_h, padded_w, rows, cols = compute_tile_grid(height, width, tile)
    padded = F.pad(image, (0, padded_w - width, 0, padded_h - height))
    tiles = padded.unfold(1, tile, tile).unfold(2, tile, tile)  # (3, rows, cols, tile, tile)
    return tiles.permute(1, 2, 0, 3, 4).reshape(rows * cols, image.shape[0], tile, tile)


class SAPerceiver(nn.Module):
    """VLSA's SA-Perceiver, Eqs. 1–2 of the seed text (ALIGNMENT_METHODS.md §2.2.1, our reading of the garbled Eq. 2).

    ```
    V′ = [V_Lo ; q]                                    q: learnable global query (1, d)
    V′ = w_o1( σ(w_q V′ · (w_kv V_Hi)ᵀ) · w_kv V_Hi ) + V′   (1)  σ = SiLU, no scale/softmax ("silu", as printed)
    V′ = w_o2( σ(V′ · (w_k V′)ᵀ) · V′ ) + V′            (2)  (optional; `self_attention=False` skips it)
    V, P = V′[:, :l], V′[:, l]
    ```
    All `w` are `d×d` without bias. `attention="softmax"` replaces σ by a scaled softmax (robustness option).

    Args to `forward`: `v_lo (B, l, d)`, `v_hi (B, m·l, d)`, `tile_mask (B, m) bool | None` (True = real tile;
    masked tiles contribute nothing). Returns `(V (B, l, d), P (B, d))`.
    """

    def __init__(self, hidden: int, attention: str = "silu", self_attention: bool = True):
        super().__init__()
        if attention not in ("silu", "softmax"):
            raise ValueError(f"MageConfig.sa_perceiver_attention={attention!r}; expected 'silu' or 'softmax'.")
        self.attention = attention
        self.global_query = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.w_q = nn.Linear(hidden, hidden, bias=False)
        self.w_kv = nn.Linear(hidden, hidden, bias=False)
        self.w_o1 = nn.Linear(hidden, hidden, bias=False)
        self.self_attention = self_attention
        if self_attention:
            self.w_k = nn.Linear(hidden, hidden, bias=False)
            self.w_o2 = nn.Linear(hidden, hidden, bias=False)

    def _attend(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, key_mask: torch.Tensor | None):
        scores = queries @ keys.transpose(1, 2)  # (B, l+1, K)
        if self.attention == "silu":
            weights = F.silu(scores)
            if key_mask is not None:
                weights = weights * key_mask[:, None, :].to(weights.dtype)
        else:
            scores = scores / math.sqrt(queries.shape[-1])
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask[:, None, :], torch.finfo(scores.dtype).min)
            weights = scores.softmax(-1)
        return weights @ values

    def forward(
        self, v_lo: torch.Tensor, v_hi: torch.Tensor, tile_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length, _ = v_lo.shape
        key_mask = None
        if tile_mask is not None:
            tokens_per_tile = v_hi.shape[1] // tile_mask.shape[1]
            key_mask = tile_mask.bool().repeat_interleave(tokens_per_tile, dim=1)  # (B, m·l)
        hidden = torch.cat([v_lo, self.global_query.expand(batch, -1, -1).to(v_lo.dtype)], dim=1)
        kv = self.w_kv(v_hi)
        hidden = self.w_o1(self._attend(self.w_q(hidden), kv, kv, key_mask)) + hidden  # Eq. 1
        if self.self_attention:
            hidden = self.w_o2(self._attend(hidden, self.w_k(hidden), hidden, None)) + hidden  # Eq. 2 (our reading)
        return hidden[:, :length], hidden[:, length]


@register_projector("sa_perceiver")
class MageSAPerceiverProjector(MageProjector):
    """VLSA's visual path: SA-Perceiver (in the tower's width) → [adaptive pool to √Q×√Q] → LLaVA-Next MLP.

    `forward(image_features (B, N, D_v), pixel_values=None, hires_features=None, hires_tile_mask=None)` →
    `(B, Q, D_l)`. `image_features` are the snapshot's tokens V_Lo. `hires_features (B, m·N_p, D_v)` are the tiles'
    tokens V_Hi; when absent, V_Hi = V_Lo, which is exactly VLSA's pipeline for an image of the tower's size (padding
    to the tile grid gives m = 1 tile equal to the snapshot). Q = N_p reproduces VLSA (no pooling, 576 tokens at
    336 px); Q < N_p average-pools V on the grid first (our addition, for equal-token comparisons). The global
    embedding P `(B, D_v)` of the last call is kept in `self.last_global_embedding` (with its gradient) for VLSA's
    reconstruction objective (alignment/vlsa.py).

    Config fields: `sa_perceiver_attention` ("silu" as printed | "softmax"),
    `sa_perceiver_self_attention` (True: apply Eq. 2), `sa_perceiver_hires_scale` (s, default 1). With s > 1 the
    model takes `pixel_values` of s·S × s·S pixels (S = the tower's image size; set the processor's image size to
    s·S): `MageModel.get_image_features` area-downsamples them to the S × S snapshot (V_Lo) and cuts them into s²
    row-major S × S tiles, all through the same tower, and passes the tiles' features as `hires_features` (V_Hi).
    That is VLSA's compressive high-resolution encoding for square images of s·S pixels (m = s² tiles, no padding).
    """

    query_based = True

    @classmethod
    def check_config(cls, config: MageConfig) -> None:
        super().check_config(config)
        scale = config.sa_perceiver_hires_scale
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(
                f"MageConfig.sa_perceiver_hires_scale={scale!r} must be an int >= 1 (1 = no high-resolution tiles; "
                "s > 1 = s×s tiles of the tower's size)."
            )

    def __init__(self, config: MageConfig):
        self.check_config(config)
        super().__init__()
        self.hires_scale = int(config.sa_perceiver_hires_scale)
        vision_hidden, text_hidden = config.vision_config.hidden_size, config.text_config.hidden_size
        self.num_patches = config.num_patches
        self.grid_side = math.isqrt(config.num_query_tokens)
        self.perceiver = SAPerceiver(
            vision_hidden,
            attention=config.sa_perceiver_attention,
            self_attention=bool(config.sa_perceiver_self_attention),
        )
        self.linear_1 = nn.Linear(vision_hidden, text_hidden)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(text_hidden, text_hidden)
        self.last_global_embedding: torch.Tensor | None = None

    def forward(
        self,
        image_features: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        hires_features: torch.Tensor | None = None,
        hires_tile_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        v_lo = self.patch_tokens(image_features, self.num_patches)
        v_hi = v_lo if hires_features is None else hires_features.to(v_lo.dtype)
        tokens, global_embedding = self.perceiver(v_lo, v_hi, hires_tile_mask)
        self.last_global_embedding = global_embedding
        if self.grid_side * self.grid_side != self.num_patches:
            tokens = self.from_grid(F.adaptive_avg_pool2d(self.to_grid(tokens), self.grid_side))
        return self.linear_2(self.act(self.linear_1(tokens)))


__all__ = [
    "PROJECTOR_REGISTRY",
    "MageProjector",
    "MageLinearProjector",
    "MageMLPProjector",
    "MagePerceiverResampler",
    "MageCAbstractor",
    "SAPerceiver",
    "MageSAPerceiverProjector",
    "compute_tile_grid",
    "split_into_tiles",
    "register_projector",
]
