# Copyright 2026 The MAGE-HF authors. Licensed under the Apache License, Version 2.0.
"""MAGE model configuration.

This file is also remote code: `save_pretrained` copies it into every checkpoint, so it imports nothing but
transformers and the standard library, and it must work on transformers 4.51+ and 5.x alike.
"""

from __future__ import annotations

import math

from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto import CONFIG_MAPPING

PROJECTOR_TYPES = ("ian", "mlp2x_gelu", "linear", "resampler", "c_abstractor", "sa_perceiver", "vab")
# Projectors that emit `num_query_tokens` tokens per image (the others emit one token per patch).
QUERY_PROJECTOR_TYPES = ("ian", "resampler", "c_abstractor", "sa_perceiver")
FEATURE_SELECT_STRATEGIES = ("default", "full")
SEB_QUERY_SOURCES = ("pixels", "features")
SEB_ATTENTION_BIASES = ("gaussian", "cell", "none")
SEB_RESIDUALS = ("vab", "queries")
ITDM_TEXT_SOURCES = ("hidden", "embeddings")
ITDM_REDUCTIONS = ("mean", "sum")

# The paper's vision tower: CLIP ViT-L/14 at 336 px.
DEFAULT_VISION_CONFIG = {
    "model_type": "clip_vision_model",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 768,
}


def _choice_error(field: str, value, allowed) -> ValueError:
    return ValueError(f"MageConfig.{field}={value!r} is not supported; expected one of {list(allowed)}.")


def _as_config(value, default_type: str, defaults: dict | None = None) -> PretrainedConfig:
    if isinstance(value, PretrainedConfig):
        return value
    if value is None:
        value = dict(defaults or {"model_type": default_type})
    value = dict(value)
    model_type = value.pop("model_type", default_type)
    return CONFIG_MAPPING[model_type](**value)


class MageConfig(PretrainedConfig):
    r"""
    Configuration of a [`MageForConditionalGeneration`]: a vision tower, the IAN projector and a causal LM.

    Args:
        vision_config (`dict` or `PretrainedConfig`, *optional*):
            Any CLIP/SigLIP vision config. Defaults to CLIP ViT-L/14-336.
        text_config (`dict` or `PretrainedConfig`, *optional*):
            Any causal-LM config. Defaults to `LlamaConfig()` (Vicuna-7B shapes).
        image_token_id (`int`, *optional*, defaults to 32000):
            Id of the `<image>` placeholder token in the tokenizer.
        vision_feature_layer (`int`, *optional*, defaults to -2):
            Hidden state of the vision tower fed to the projector (-2 = penultimate layer).
        vision_feature_select_strategy (`str`, *optional*, defaults to `"default"`):
            `"default"` drops the CLS token, `"full"` keeps it (ignored by the SEB's query grid, which is always the
            patch grid).
        projector_type (`str`, *optional*, defaults to `"ian"`):
            `"ian"` (VAB + SEB, MAGE), `"mlp2x_gelu"` (LLaVA-1.5), `"linear"` (LLaVA-1.0), the ablation projectors
            `"resampler"`, `"c_abstractor"`, `"sa_perceiver"` (VLSA) and `"vab"` (the IAN without its SEB); see
            `projectors.py`.
        num_query_tokens (`int`, *optional*, defaults to 144):
            Q, the IAN's output tokens per image; a perfect square no larger than the number of patches.
        seb_query_source (`str`, *optional*, defaults to `"pixels"`):
            Where the SEB's CNN takes its queries from: the image patches (`"pixels"`, as in the paper) or the vision
            feature grid (`"features"`, cheaper, C-Abstractor-like).
        seb_hidden_size (`int`, *optional*):
            Channels of the SEB's query CNN. Defaults to the vision tower's hidden size.
        seb_num_layers (`int`, *optional*, defaults to 1):
            Cross-attention blocks (queries attend to the VAB output); the paper describes one.
        seb_num_heads (`int`, *optional*, defaults to 8):
            Attention heads of the SEB; must divide the LM hidden size.
        vab_depth (`int`, *optional*, defaults to 2):
            Linear layers of the VAB's MLP (2 = Linear → GELU → Linear).
        seb_output_norm (`bool`, *optional*, defaults to `False`):
            A LayerNorm on the SEB's output. The paper puts its learnable norms in the VAB only; with this norm the
            tiny model's stage 1 collapsed the image tokens towards one vector (docs/DECISIONS.md), so it is off by
            default. Checkpoints written before this option existed had it: load them with `seb_output_norm=True`.
        seb_attention_bias (`str`, *optional*, defaults to `"gaussian"`):
            A fixed locality bias on the SEB's attention logits, `-d² / (2 σ_h²)` with `d` the distance from a query
            cell to a patch and `σ_h` doubling per head from half a query cell: the first heads read the patches under
            their cell, the last ones the whole image. `"cell"` masks each query to the patches inside its cell of the
            query grid (a learned pooling per cell; with as many queries as patches, one patch per query). `"none"` is
            plain content attention, the behaviour of checkpoints written before this option existed
            (docs/DECISIONS.md).
        seb_residual (`str`, *optional*, defaults to `"queries"`):
            The SEB's residual stream: `"queries"`, the CNN queries (+ positions), to which the cross-attention and
            the MLP add; `"vab"`, the VAB output average-pooled onto the query grid, with the CNN queries (+ positions)
            added to the attention's query input only (they choose which patches each query reads, the tokens keep
            the VAB's aligned features).
        projector_hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the projector MLPs.
        resampler_hidden_size (`int`, *optional*):
            Width of the Perceiver resampler (`projector_type="resampler"`). Defaults to the vision hidden size.
        resampler_num_heads (`int`, *optional*):
            Its attention heads. Defaults to `seb_num_heads`.
        resampler_num_layers (`int`, *optional*):
            Its layers. Defaults to `seb_num_layers`.
        resampler_mlp_ratio (`int`, *optional*, defaults to 4):
            Its MLP width as a multiple of `resampler_hidden_size`.
        resampler_pos_emb (`bool`, *optional*, defaults to `False`):
            A learnable position embedding on its keys (off, as in Honeybee's resampler).
        c_abstractor_hidden_size (`int`, *optional*):
            Channels of Honeybee's C-Abstractor (`projector_type="c_abstractor"`). Defaults to the vision hidden size.
        c_abstractor_depth (`int`, *optional*, defaults to 3):
            RegNet bottleneck blocks before and after its pooling.
        c_abstractor_mlp_depth (`int`, *optional*, defaults to 2):
            Linear layers of its output MLP.
        c_abstractor_pos_emb (`bool`, *optional*, defaults to `True`):
            A learnable position embedding on its input features.
        sa_perceiver_attention (`str`, *optional*, defaults to `"silu"`):
            VLSA's SA-Perceiver attention (`projector_type="sa_perceiver"`): `"silu"` as printed, or `"softmax"`.
        sa_perceiver_self_attention (`bool`, *optional*, defaults to `True`):
            Apply its Eq. 2 self-attention.
        sa_perceiver_hires_scale (`int`, *optional*, defaults to 1):
            1 = no tiles; s > 1 = the model takes s·S × s·S pixels and also encodes the s² tiles (docs/alignment.md).
        itdm_weight (`float`, *optional*, defaults to 1.0):
            Weight of the ITDM term: `L = L_ITG + itdm_weight * L_ITDM` (0 disables it).
        itdm_text_source (`str`, *optional*, defaults to `"hidden"`):
            `"hidden"` (hidden state of a text-only LM forward) or `"embeddings"` (input embeddings).
        itdm_text_layer (`int`, *optional*, defaults to -1):
            Hidden-state layer used when `itdm_text_source="hidden"`.
        itdm_reduction (`str`, *optional*, defaults to `"mean"`):
            `"mean"` (torch `mse_loss`, mean over features) or `"sum"` (Eq. 2 as printed: squared L2 per sample).

    Example:

    ```python
    >>> from transformers import CLIPVisionConfig, LlamaConfig
    >>> from modeling_mage import MageConfig, MageForConditionalGeneration

    >>> config = MageConfig(CLIPVisionConfig(image_size=64, patch_size=16), LlamaConfig(), num_query_tokens=4)
    >>> config.image_seq_length
    4
    ```
    """

    model_type = "mage"
    sub_configs = {"text_config": AutoConfig, "vision_config": AutoConfig}

    def __init__(
        self,
        vision_config=None,
        text_config=None,
        image_token_id: int = 32000,
        vision_feature_layer: int = -2,
        vision_feature_select_strategy: str = "default",
        projector_type: str = "ian",
        num_query_tokens: int = 144,
        seb_query_source: str = "pixels",
        seb_hidden_size: int | None = None,
        seb_num_layers: int = 1,
        seb_num_heads: int = 8,
        vab_depth: int = 2,
        seb_output_norm: bool = False,
        seb_attention_bias: str = "gaussian",
        seb_residual: str = "queries",
        projector_hidden_act: str = "gelu",
        resampler_hidden_size: int | None = None,
        resampler_num_heads: int | None = None,
        resampler_num_layers: int | None = None,
        resampler_mlp_ratio: int = 4,
        resampler_pos_emb: bool = False,
        c_abstractor_hidden_size: int | None = None,
        c_abstractor_depth: int = 3,
        c_abstractor_mlp_depth: int = 2,
        c_abstractor_pos_emb: bool = True,
        sa_perceiver_attention: str = "silu",
        sa_perceiver_self_attention: bool = True,
        sa_perceiver_hires_scale: int = 1,
        itdm_weight: float = 1.0,
        itdm_text_source: str = "hidden",
        itdm_text_layer: int = -1,
        itdm_reduction: str = "mean",
        tie_word_embeddings: bool = False,
        **kwargs,
    ):
        self.vision_config = _as_config(vision_config, "clip_vision_model", DEFAULT_VISION_CONFIG)
        self.text_config = _as_config(text_config, "llama")
        self.image_token_id = image_token_id
        self.vision_feature_layer = vision_feature_layer
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.projector_type = projector_type
        self.num_query_tokens = num_query_tokens
        self.seb_query_source = seb_query_source
        self.seb_hidden_size = seb_hidden_size if seb_hidden_size is not None else self.vision_config.hidden_size
        self.seb_num_layers = seb_num_layers
        self.seb_num_heads = seb_num_heads
        self.vab_depth = vab_depth
        self.seb_output_norm = seb_output_norm
        self.seb_attention_bias = seb_attention_bias
        self.seb_residual = seb_residual
        self.projector_hidden_act = projector_hidden_act
        self.resampler_hidden_size = resampler_hidden_size
        self.resampler_num_heads = resampler_num_heads
        self.resampler_num_layers = resampler_num_layers
        self.resampler_mlp_ratio = resampler_mlp_ratio
        self.resampler_pos_emb = resampler_pos_emb
        self.c_abstractor_hidden_size = c_abstractor_hidden_size
        self.c_abstractor_depth = c_abstractor_depth
        self.c_abstractor_mlp_depth = c_abstractor_mlp_depth
        self.c_abstractor_pos_emb = c_abstractor_pos_emb
        self.sa_perceiver_attention = sa_perceiver_attention
        self.sa_perceiver_self_attention = sa_perceiver_self_attention
        self.sa_perceiver_hires_scale = sa_perceiver_hires_scale
        self.itdm_weight = itdm_weight
        self.itdm_text_source = itdm_text_source
        self.itdm_text_layer = itdm_text_layer
        self.itdm_reduction = itdm_reduction
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        self.validate_mage()

    # ----------------------------------------------------------------------------------------------------- shapes
    @property
    def num_patches(self) -> int:
        """Patches per image side squared: `(image_size // patch_size) ** 2`."""
        return (self.vision_config.image_size // self.vision_config.patch_size) ** 2

    @property
    def image_seq_length(self) -> int:
        """Placeholder tokens per image in the LM input."""
        if self.projector_type in QUERY_PROJECTOR_TYPES:
            return self.num_query_tokens
        return self.num_patches + (1 if self.vision_feature_select_strategy == "full" else 0)

    # ------------------------------------------------------------------------------------------------ validation
    def validate_mage(self) -> None:
        """Raise a `ValueError` naming the field, the value and what is allowed."""
        if self.projector_type not in PROJECTOR_TYPES:
            raise _choice_error("projector_type", self.projector_type, PROJECTOR_TYPES)
        if self.vision_feature_select_strategy not in FEATURE_SELECT_STRATEGIES:
            raise _choice_error(
                "vision_feature_select_strategy", self.vision_feature_select_strategy, FEATURE_SELECT_STRATEGIES
            )
        if self.seb_query_source not in SEB_QUERY_SOURCES:
            raise _choice_error("seb_query_source", self.seb_query_source, SEB_QUERY_SOURCES)
        if self.seb_attention_bias not in SEB_ATTENTION_BIASES:
            raise _choice_error("seb_attention_bias", self.seb_attention_bias, SEB_ATTENTION_BIASES)
        if self.seb_residual not in SEB_RESIDUALS:
            raise _choice_error("seb_residual", self.seb_residual, SEB_RESIDUALS)
        if self.itdm_text_source not in ITDM_TEXT_SOURCES:
            raise _choice_error("itdm_text_source", self.itdm_text_source, ITDM_TEXT_SOURCES)
        if self.itdm_reduction not in ITDM_REDUCTIONS:
            raise _choice_error("itdm_reduction", self.itdm_reduction, ITDM_REDUCTIONS)
        if not isinstance(self.vision_feature_layer, int):
            raise ValueError(
                f"MageConfig.vision_feature_layer={self.vision_feature_layer!r} is not supported; expected one int "
                "(e.g. -2 for the penultimate layer)."
            )
        if self.vab_depth < 1:
            raise ValueError(f"MageConfig.vab_depth={self.vab_depth!r} must be >= 1.")
        if self.projector_type != "ian":
            return
        q = self.num_query_tokens
        if not isinstance(q, int) or q < 1 or math.isqrt(q) ** 2 != q:
            raise ValueError(
                f"MageConfig.num_query_tokens={q!r} must be a positive perfect square (e.g. 64, 144, 256, 576): "
                "the SEB lays its queries on a square grid."
            )
        if q > self.num_patches:
            raise ValueError(
                f"MageConfig.num_query_tokens={q} is larger than the vision tower's patch grid "
                f"({self.num_patches} patches for image_size={self.vision_config.image_size}, "
                f"patch_size={self.vision_config.patch_size}); expected a perfect square <= {self.num_patches}."
            )
        if self.seb_num_layers < 1:
            raise ValueError(f"MageConfig.seb_num_layers={self.seb_num_layers!r} must be >= 1.")
        hidden = self.text_config.hidden_size
        if self.seb_num_heads < 1 or hidden % self.seb_num_heads:
            raise ValueError(
                f"MageConfig.seb_num_heads={self.seb_num_heads!r} must divide the LM hidden size ({hidden})."
            )


__all__ = ["MageConfig"]
