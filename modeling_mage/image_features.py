# Copyright 2026 The MAGE-HF authors. Licensed under the Apache License, Version 2.0.
"""The image side of [`MageModel`]: `pixel_values` → vision tower features → the projector's image tokens, and the
positions of the LM input they replace.

[`MageImageFeaturesMixin`] holds LLaVA's image methods (`get_image_features`, `get_placeholder_mask`), MAGE's
vision-tower feature selection (`select_vision_features`) and VLSA's high-resolution tiles; `MageModel` inherits them,
as transformers' `WhisperForConditionalGeneration` inherits `WhisperGenerationMixin` from a sibling file. The mixin owns
no weights (it reads `self.config`, `self.vision_tower`, `self.multi_modal_projector` and the LM's input embeddings),
so the state-dict keys are `MageModel`'s.

Remote code: imports only torch and transformers. `modeling_mage.py` imports this file directly (transformers 4.57
copies only the modeling file's direct relative imports) and lists it in `REMOTE_CODE_FILES`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import __version__ as transformers_version
from transformers.modeling_outputs import BaseModelOutputWithPooling

TRANSFORMERS_MAJOR = int(transformers_version.split(".")[0])


def unwrap_vision_tower(tower: nn.Module) -> nn.Module:
    """The vision transformer inside `tower`: 4.x CLIPVisionModel wraps a `vision_model`, 5.x has none. Unwrapping
    gives both the same weight names (`model.vision_tower.*`)."""
    return getattr(tower, "vision_model", tower)


def _config_flag(config, name: str, value: bool | None) -> bool:
    """`value`, else `config.<name>` (False when the config has no such attribute)."""
    return bool(value if value is not None else getattr(config, name, False))


class MageImageFeaturesMixin:
    """`MageModel`'s image methods: `pixel_values (num_images, 3, H, W)` → image tokens `(num_images,
    image_seq_length, D_l)` and the placeholder mask `(B, L, D_l)` they are scattered into.

    Needs on the model: `config` ([`MageConfig`]), `vision_tower` (unwrapped, see [`unwrap_vision_tower`]),
    `multi_modal_projector` and `get_input_embeddings()`.
    """

    def select_vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Vision tower hidden state at `vision_feature_layer`, CLS dropped under the "default" strategy.

        `pixel_values (num_images, 3, H, W)` → `(num_images, N, D_v)`.
        """
        return self._tower_features(pixel_values)[0]

    def _tower_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | None = None,
        vision_feature_select_strategy: str | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, BaseModelOutputWithPooling]:
        """`(features (num_images, N, D_v), the tower's outputs)`: the hidden state at `vision_feature_layer`
        (default: the config's), CLS dropped under the "default" strategy."""
        layer = self.config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        if not isinstance(layer, int):
            raise ValueError(
                f"vision_feature_layer={layer!r}: MAGE's projector reads one layer of the vision tower (an int); "
                "a list of layers would change the feature width it was built for."
            )
        tower_dtype = next(self.vision_tower.parameters()).dtype
        extra = {"output_attentions": True} if output_attentions else {}
        outputs = self.vision_tower(pixel_values.to(tower_dtype), output_hidden_states=True, **extra)
        features = outputs.hidden_states[layer]
        if strategy == "default" and features.shape[1] == self.config.num_patches + 1:
            features = features[:, 1:]
        return features, outputs

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | None = None,
        vision_feature_select_strategy: str | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple | torch.Tensor:
        """The image tokens the LM reads, `pixel_values (num_images, 3, H, W)` → `(num_images, image_seq_length,
        D_l)`, with the vision tower's outputs, as LLaVA's `get_image_features` on transformers 5.x.

        H = W = the tower's image size S, or s·S for a projector with `hires_scale` s > 1 (VLSA's SA-Perceiver with
        `sa_perceiver_hires_scale`): the tower then also encodes the s² tiles (`hires_features`) besides the S × S
        snapshot (whose tower outputs are the ones returned).

        Args:
            vision_feature_layer (`int`, *optional*): tower layer read by the projector (default: the config's).
            vision_feature_select_strategy (`str`, *optional*): `"default"` drops CLS, `"full"` keeps it.
            output_hidden_states / output_attentions (`bool`, *optional*): also return the tower's hidden states
                (`num_layers + 1` of `(num_images, N + 1, D_v)`) / attention maps (default: the config's flags).
            return_dict (`bool`, *optional*): `True` → the [`BaseModelOutputWithPooling`], `False` → its
                `to_tuple()`. `None` follows the installed transformers' LLaVA: on 5.x `config.return_dict` (the
                output object by default), on 4.x the bare `pooler_output` tensor (the output object when tower
                hidden states or attentions are asked for). Version-independent callers pass `return_dict=True` and
                read `.pooler_output`.

        Returns:
            [`BaseModelOutputWithPooling`] with `pooler_output (num_images, image_seq_length, D_l)` (the projector
            output), `last_hidden_state (num_images, N + 1, D_v)` and optional `hidden_states`/`attentions` of the
            tower; its `to_tuple()`; or the `pooler_output` tensor alone (see `return_dict`).
        """
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must have shape (num_images, channels, height, width); got {tuple(pixel_values.shape)}."
            )
        tower_size = self.config.vision_config.image_size
        scale = getattr(self.multi_modal_projector, "hires_scale", 1)
        expected = tower_size * scale
        if tuple(pixel_values.shape[-2:]) != (expected, expected):
            hires = (
                f" (sa_perceiver_hires_scale={scale}: {scale}x{scale} tiles of the tower's {tower_size}x{tower_size})"
                if scale > 1
                else ""
            )
            raise ValueError(
                f"pixel_values are {tuple(pixel_values.shape[-2:])} pixels but the "
                f"{'model' if hires else 'vision tower'} expects {expected}x{expected}{hires}; preprocess images "
                "with the model's MageProcessor."
            )
        output_hidden_states = _config_flag(self.config, "output_hidden_states", output_hidden_states)
        output_attentions = _config_flag(self.config, "output_attentions", output_attentions)
        select = {
            "vision_feature_layer": vision_feature_layer,
            "vision_feature_select_strategy": vision_feature_select_strategy,
            "output_attentions": output_attentions,
        }
        projector_dtype = next(self.multi_modal_projector.parameters()).dtype
        if scale > 1:
            image_tokens, tower = self._hires_image_features(pixel_values, tower_size, scale, projector_dtype, select)
        else:
            features, tower = self._tower_features(pixel_values, **select)
            image_tokens = self.multi_modal_projector(features.to(projector_dtype), pixel_values.to(projector_dtype))
        if return_dict is None:
            if TRANSFORMERS_MAJOR >= 5:  # 5.x LLaVA: the config's return_dict (a ModelOutput by default)
                return_dict = getattr(self.config, "return_dict", True) is not False
            elif output_hidden_states or output_attentions:
                return_dict = True
            else:  # 4.x LLaVA's contract: the projected tensor
                return image_tokens
        output = BaseModelOutputWithPooling(
            last_hidden_state=tower.last_hidden_state,
            pooler_output=image_tokens,
            hidden_states=tower.hidden_states if output_hidden_states else None,
            attentions=tower.attentions if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()

    def _hires_image_features(
        self, pixel_values: torch.Tensor, tile: int, scale: int, dtype: torch.dtype, select: dict
    ) -> tuple[torch.Tensor, BaseModelOutputWithPooling]:
        """VLSA §3.1 for square `(B, 3, s·S, s·S)` images: the area-downsampled S × S snapshot → V_Lo, the s² row-major
        S × S tiles → V_Hi `(B, s²·N, D_v)`, both through the same tower, then the projector. Returns the image tokens
        and the snapshot's tower outputs."""
        batch, channels = pixel_values.shape[:2]
        # area = the mean of each s×s pixel block; it commutes with the per-channel affine normalisation
        snapshot = nn.functional.interpolate(pixel_values, size=(tile, tile), mode="area")
        tiles = pixel_values.unfold(2, tile, tile).unfold(3, tile, tile)  # (B, 3, s, s, S, S)
        tiles = tiles.permute(0, 2, 3, 1, 4, 5).reshape(batch * scale * scale, channels, tile, tile)
        features, tower = self._tower_features(snapshot, **select)
        hires = self._tower_features(tiles, **{**select, "output_attentions": False})[0]
        hires = hires.reshape(batch, scale * scale * hires.shape[1], hires.shape[2])
        tokens = self.multi_modal_projector(features.to(dtype), snapshot.to(dtype), hires_features=hires.to(dtype))
        return tokens, tower

    def get_placeholder_mask(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """Boolean mask `(B, L, D)` of image placeholder positions; raises when their count ≠ Q × images."""
        if input_ids is None:
            image_embedding = self.get_input_embeddings()(
                torch.tensor(self.config.image_token_id, dtype=torch.long, device=inputs_embeds.device)
            )
            special_image_mask = (inputs_embeds == image_embedding).all(-1)
        else:
            special_image_mask = input_ids == self.config.image_token_id
        n_image_tokens = int(special_image_mask.sum())
        num_images, tokens_per_image = image_features.shape[0], image_features.shape[1]
        if n_image_tokens != num_images * tokens_per_image:
            raise ValueError(
                "Image features and image tokens do not match: the input holds "
                f"{n_image_tokens} image placeholder tokens (id {self.config.image_token_id}) but {num_images} "
                f"image(s) × {tokens_per_image} tokens per image = {num_images * tokens_per_image} were expected. "
                "Build inputs with MageProcessor, which expands each <image> to the right number of tokens, and "
                "do not truncate through them."
            )
        return special_image_mask.unsqueeze(-1).expand_as(inputs_embeds)


__all__ = ["MageImageFeaturesMixin", "unwrap_vision_tower"]
