# Copyright 2026 The MAGE-HF authors. Licensed under the Apache License, Version 2.0.
"""Projectors between the vision tower and the LM: MAGE's IAN (VAB + SEB) and LLaVA's linear / MLP projectors.

Remote code: imports only torch, transformers and siblings of this folder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from .configuration_mage import MageConfig
from .projectors import (
    PROJECTOR_REGISTRY,
    MageLinearProjector,
    MageMLPProjector,
    MageProjector,
    register_projector,
)


class MageVectorAlignmentBlock(nn.Module):
    """VAB: maps vision features to the LM width with an MLP between learnable norms.

    `LayerNorm(D_v) → Linear(D_v, D_l) → act → [Linear(D_l, D_l) → act]* → Linear(D_l, D_l) → LayerNorm(D_l)`
    with `config.vab_depth` linear layers in all.

    Input `(B, N_p, D_v)`, output `(B, N_p, D_l)`.
    """

    def __init__(self, config: MageConfig):
        super().__init__()
        vision_hidden, text_hidden = config.vision_config.hidden_size, config.text_config.hidden_size
        self.pre_norm = nn.LayerNorm(vision_hidden)
        widths = [vision_hidden] + [text_hidden] * config.vab_depth
        self.linears = nn.ModuleList(nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:]))
        self.act = ACT2FN[config.projector_hidden_act]
        self.post_norm = nn.LayerNorm(text_hidden)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        hidden_states = self.pre_norm(image_features)
        for index, linear in enumerate(self.linears):
            hidden_states = linear(hidden_states)
            if index < len(self.linears) - 1:
                hidden_states = self.act(hidden_states)
        return self.post_norm(hidden_states)


class MageQueryCNN(nn.Module):
    """The SEB's learnable CNN: turns the image (or the vision feature grid) into a `√Q × √Q` grid of queries.

    `"pixels"`: a patchifying convolution (kernel = stride = the tower's patch size) on `pixel_values (B, 3, H, W)`;
    `"features"`: a 1×1 convolution on the vision feature grid `(B, D_v, g, g)`. Then a residual depth-wise 3×3
    convolution (spatial mixing; the channels are mixed by the stem and the out-projection, as in a depth-wise
    separable block: a full 3×3 convolution dominated the CNN's cost in a training step, docs/performance.md),
    adaptive average pooling to `√Q × √Q` (learnable convolutions instead of fixed pooling, paper §3.1) and a linear
    map to the LM width. Output `(B, Q, D_l)`.
    """

    def __init__(self, config: MageConfig):
        super().__init__()
        channels = config.seb_hidden_size
        self.source = config.seb_query_source
        patch = config.vision_config.patch_size
        if self.source == "pixels":
            in_channels = getattr(config.vision_config, "num_channels", 3)
            self.stem = nn.Conv2d(in_channels, channels, kernel_size=patch, stride=patch)
        else:
            self.stem = nn.Conv2d(config.vision_config.hidden_size, channels, kernel_size=1)
        self.act = ACT2FN[config.projector_hidden_act]
        self.mixer = nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels)
        self.grid_size = math.isqrt(config.num_query_tokens)
        self.pool = nn.AdaptiveAvgPool2d(self.grid_size)
        self.out_proj = nn.Linear(channels, config.text_config.hidden_size)

    def forward(self, pixel_values: torch.Tensor | None, feature_grid: torch.Tensor | None) -> torch.Tensor:
        source = pixel_values if self.source == "pixels" else feature_grid
        hidden = self.act(self.stem(source.to(self.stem.weight.dtype)))
        hidden = hidden + self.act(self.mixer(hidden))
        hidden = self.pool(hidden)  # (B, C, √Q, √Q)
        return self.out_proj(hidden.flatten(2).transpose(1, 2))


def patch_grid(tokens: torch.Tensor, num_patches: int) -> torch.Tensor:
    """The last `num_patches` tokens `(B, N, D)` (a kept CLS token dropped) as a feature map `(B, D, √N_p, √N_p)`."""
    patches = tokens[:, -num_patches:]
    batch, count, width = patches.shape
    side = math.isqrt(count)
    return patches.transpose(1, 2).reshape(batch, width, side, side)


def grid_locality_bias(query_side: int, patch_side: int, num_heads: int) -> torch.Tensor:
    """Additive attention bias `(num_heads, Q, N_p)`: `-d² / (2 σ_h²)`, with `d` the distance (in patches) from a query
    cell's centre to a patch centre and `σ_h = cell · 2^(h-1)` for head `h` (half a cell, one cell, two, …), so the
    first heads read the patches under their cell and the last ones the whole image."""
    cell = patch_side / query_side
    query_centres = (torch.arange(query_side, dtype=torch.float64) + 0.5) * cell
    patch_centres = torch.arange(patch_side, dtype=torch.float64) + 0.5
    query_rows, query_cols = (c.flatten() for c in torch.meshgrid(query_centres, query_centres, indexing="ij"))
    patch_rows, patch_cols = (c.flatten() for c in torch.meshgrid(patch_centres, patch_centres, indexing="ij"))
    squared = (query_rows[:, None] - patch_rows[None]) ** 2 + (query_cols[:, None] - patch_cols[None]) ** 2
    sigma = cell * 2.0 ** (torch.arange(num_heads, dtype=torch.float64) - 1)
    return (-squared[None] / (2 * sigma[:, None, None] ** 2)).float()


def grid_cell_mask(query_side: int, patch_side: int, num_heads: int) -> torch.Tensor:
    """Additive attention mask `(num_heads, Q, N_p)`: `0` for the patches whose centres lie inside the query's cell of
    the `√Q × √Q` grid laid over the patch grid, `-inf` for all others (the same for every head). A cell is at least
    one patch wide (`num_query_tokens` ≤ the patch grid), so every query reads at least one patch; with `Q = N_p` each
    query reads exactly its own patch."""
    cell = patch_side / query_side
    patch_cell = (torch.arange(patch_side, dtype=torch.float64) + 0.5).div(cell).floor().long()  # (patch_side,)
    query_rows, query_cols = (
        c.flatten() for c in torch.meshgrid(torch.arange(query_side), torch.arange(query_side), indexing="ij")
    )
    patch_rows, patch_cols = (c.flatten() for c in torch.meshgrid(patch_cell, patch_cell, indexing="ij"))
    inside = (query_rows[:, None] == patch_rows[None]) & (query_cols[:, None] == patch_cols[None])
    mask = torch.zeros(inside.shape).masked_fill(~inside, float("-inf"))
    return mask[None].expand(num_heads, -1, -1).contiguous()


class MageCrossAttentionBlock(nn.Module):
    """Pre-norm block: queries attend to the VAB output (keys/values), then an MLP; both residual.

    Queries `(B, Q, D)`, context `(B, N_p, D)` → `(B, Q, D)`. Uses `F.scaled_dot_product_attention` (SDPA).
    """

    def __init__(self, config: MageConfig):
        super().__init__()
        hidden = config.text_config.hidden_size
        self.num_heads = config.seb_num_heads
        self.head_dim = hidden // self.num_heads
        self.query_norm = nn.LayerNorm(hidden)
        self.context_norm = nn.LayerNorm(hidden)
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(hidden, hidden)
        self.v_proj = nn.Linear(hidden, hidden)
        self.o_proj = nn.Linear(hidden, hidden)
        self.mlp_norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, 4 * hidden)
        self.act = ACT2FN[config.projector_hidden_act]
        self.fc2 = nn.Linear(4 * hidden, hidden)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        queries: torch.Tensor,
        context: torch.Tensor,
        attention_bias: torch.Tensor | None = None,
        query_embed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`attention_bias`: `None` or an additive bias broadcastable to `(B, heads, Q, N_p)`. `query_embed`
        (`(B, Q, D)`, optional): added to the queries in the attention's query input only, not to the residual stream
        (as DETR adds its query positions)."""
        attention_queries = queries if query_embed is None else queries + query_embed
        normed_queries, normed_context = self.query_norm(attention_queries), self.context_norm(context)
        attended = F.scaled_dot_product_attention(
            self._heads(self.q_proj(normed_queries)),
            self._heads(self.k_proj(normed_context)),
            self._heads(self.v_proj(normed_context)),
            attn_mask=attention_bias,
        )
        attended = attended.transpose(1, 2).reshape(queries.shape)
        queries = queries + self.o_proj(attended)
        return queries + self.fc2(self.act(self.fc1(self.mlp_norm(queries))))


class MageSemanticEnhancementBlock(nn.Module):
    """SEB: CNN queries (+ learnable 2-D position embedding) cross-attend to the VAB output (then a LayerNorm only
    when `config.seb_output_norm`). The residual stream the attention and MLP add to is set by `config.seb_residual`:
    `"queries"` the CNN queries themselves; `"vab"` the VAB output average-pooled onto the `√Q × √Q` query grid, with
    the CNN queries (+ positions) steering the attention only. With `config.seb_attention_bias="gaussian"` each
    head's attention logits get a fixed locality bias (`grid_locality_bias`); with `"cell"` each query reads only
    the patches inside its cell of the query grid (`grid_cell_mask`). Neither is learned or saved.

    Args to `forward`:
        aligned (`torch.Tensor` of shape `(B, N_p, D_l)`): the VAB output, used as keys and values.
        pixel_values (`torch.Tensor` of shape `(B, 3, H, W)`, *optional*): needed when `seb_query_source="pixels"`.
        feature_grid (`torch.Tensor` of shape `(B, D_v, g, g)`, *optional*): needed when `seb_query_source="features"`.

    Returns `V''` of shape `(B, Q, D_l)`.
    """

    def __init__(self, config: MageConfig):
        super().__init__()
        hidden = config.text_config.hidden_size
        self.query_cnn = MageQueryCNN(config)
        self.residual = config.seb_residual
        self.num_patches = config.num_patches
        self.position_embedding = nn.Parameter(torch.zeros(1, config.num_query_tokens, hidden))
        self.layers = nn.ModuleList(MageCrossAttentionBlock(config) for _ in range(config.seb_num_layers))
        # The keys carry only the tower's weak position signal and the projections start near zero, so without a
        # locality prior every query averaged the whole image, and which colour goes with which shape was lost
        # (docs/DECISIONS.md).
        self.attention_bias_kind = config.seb_attention_bias
        self.bias_arguments = (
            math.isqrt(config.num_query_tokens),
            math.isqrt(config.num_patches),
            config.seb_num_heads,
        )
        self.register_buffer("attention_bias", self.locality_bias(), persistent=False)
        # No output LayerNorm by default: with it, stage 1 shrank the image-dependent part of the tokens
        # (docs/DECISIONS.md, "No LayerNorm on the SEB output").
        self.final_norm = nn.LayerNorm(hidden) if config.seb_output_norm else nn.Identity()

    def locality_bias(self) -> torch.Tensor | None:
        """The `(heads, Q, N_p)` bias, or `None` when turned off. `_init_weights` calls it too: a non-persistent
        buffer is not in the checkpoint, and transformers 5 builds the model on the meta device."""
        builders = {"gaussian": grid_locality_bias, "cell": grid_cell_mask}
        builder = builders.get(self.attention_bias_kind)
        return builder(*self.bias_arguments) if builder is not None else None

    def forward(
        self,
        aligned: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        feature_grid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        queries = self.query_cnn(pixel_values, feature_grid).to(aligned.dtype)
        queries = queries + self.position_embedding.to(aligned.dtype)
        stream, query_embed = queries, None
        if self.residual == "vab":  # the VAB output pooled onto the query grid (a kept CLS token is not on it)
            grid = F.adaptive_avg_pool2d(patch_grid(aligned, self.num_patches), self.query_cnn.grid_size)
            stream, query_embed = grid.flatten(2).transpose(1, 2), queries
        bias = self.attention_bias
        if bias is not None:
            bias = bias.to(aligned.dtype)[None]  # 4-D: CPU SDPA keeps its flash kernel (a 3-D mask ran the math path)
            extra = aligned.shape[1] - bias.shape[-1]  # a kept CLS token (strategy "full") gets no bias
            bias = F.pad(bias, (extra, 0)) if extra else bias
        for layer in self.layers:
            stream = layer(stream, aligned, bias, query_embed)
        return self.final_norm(stream)


@register_projector("ian", query_based=True)
class MageIntelligentAlignmentNetwork(MageProjector):
    """IAN = VAB then SEB.

    Args to `forward`:
        image_features (`torch.Tensor` of shape `(B, N, D_v)`): selected vision features (CLS dropped or kept).
        pixel_values (`torch.Tensor` of shape `(B, 3, H, W)`, *optional*): the images (SEB queries from pixels).

    Returns `(B, Q, D_l)`.
    """

    def __init__(self, config: MageConfig):
        super().__init__()
        self.config = config
        self.vab = MageVectorAlignmentBlock(config)
        self.seb = MageSemanticEnhancementBlock(config)

    def forward(self, image_features: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        aligned = self.vab(image_features)
        if self.config.seb_query_source == "pixels":
            if pixel_values is None:
                raise ValueError("The IAN with seb_query_source='pixels' needs `pixel_values` for its query CNN.")
            return self.seb(aligned, pixel_values=pixel_values)
        return self.seb(aligned, feature_grid=patch_grid(image_features, self.config.num_patches))


@register_projector("vab")
class MageVectorAlignmentProjector(MageProjector):
    """The IAN without its SEB (an ablation): the VAB alone, one token per patch, `(B, N, D_v)` → `(B, N, D_l)`."""

    def __init__(self, config: MageConfig):
        super().__init__()
        self.vab = MageVectorAlignmentBlock(config)

    def forward(self, image_features: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        return self.vab(image_features)


# ------------------------------------------------------------------------------------------------------ builder
# The registry lives in projectors.py; the builder lives here, below every built-in projector's registration.
PROJECTOR_CLASSES: dict[str, type[nn.Module]] = PROJECTOR_REGISTRY


def get_projector_class(projector_type: str) -> type[nn.Module]:
    """The registered class of `projector_type`; a `ValueError` lists the registered names otherwise."""
    if projector_type not in PROJECTOR_REGISTRY:
        raise ValueError(
            f"MageConfig.projector_type={projector_type!r} is not registered; expected one of {sorted(PROJECTOR_REGISTRY)}."
        )
    return PROJECTOR_REGISTRY[projector_type]


def build_projector(config: MageConfig) -> nn.Module:
    """The projector named by `config.projector_type`, after its `check_config`."""
    cls = get_projector_class(config.projector_type)
    check = getattr(cls, "check_config", None)
    if check is not None:
        check(config)
    return cls(config)


__all__ = [
    "MageVectorAlignmentBlock",
    "MageSemanticEnhancementBlock",
    "MageIntelligentAlignmentNetwork",
    "MageVectorAlignmentProjector",
    "MageLinearProjector",
    "MageMLPProjector",
    "PROJECTOR_CLASSES",
    "build_projector",
    "get_projector_class",
]
