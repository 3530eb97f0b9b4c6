# Copyright 2026 The MAGE-HF authors. Licensed under the Apache License, Version 2.0.
"""PyTorch MAGE: vision tower → IAN (VAB + SEB) → causal LM, a sibling of transformers' `models/llava`.

Remote code: this folder is copied flat into every checkpoint, so only relative imports between siblings, nothing but
torch + transformers at load time, and it runs unchanged on transformers 4.51+ and 5.x. `MageModel`'s image methods
(`MageImageFeaturesMixin`) are in `image_features.py`, the output dataclasses in `outputs.py`.
"""

from __future__ import annotations

import os
import shutil
import warnings

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import __version__ as transformers_version
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling
from transformers.utils import logging

from .configuration_mage import MageConfig
from .ian import MageSemanticEnhancementBlock, build_projector
from .image_features import MageImageFeaturesMixin, unwrap_vision_tower
from .outputs import MageCausalLMOutputWithPast, MageModelOutputWithPast
from .projectors import PROJECTOR_REGISTRY  # noqa: F401  (4.57 copies only this file's direct relative imports)

logger = logging.get_logger(__name__)

TRANSFORMERS_MAJOR = int(transformers_version.split(".")[0])
# transformers 5.24 renamed the KV cache (argument and output field) `past_key_values` → `cache`; the old name only
# warns there. Talk to the LM and build outputs with the name this version declares.
CACHE_NAME = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"

# Modules that must stay in full precision under bitsandbytes quantisation: prefixes from the model root, which
# replace bitsandbytes' defaults on 5.x (docs/DECISIONS.md, Model: "Quantisation").
QUANTIZATION_SKIP_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]

# Files of this folder that make up the remote code, and the auto_map that names them. `register_for_auto_class`
# takes one class and refuses AutoModelForVision2Seq on 5.x, so the map is written explicitly (docs/DECISIONS.md,
# Model: "save_pretrained").
REMOTE_CODE_FILES = (
    "configuration_mage.py",
    "ian.py",
    "projectors.py",
    "image_features.py",
    "outputs.py",
    "modeling_mage.py",
)
AUTO_MAP = {
    "AutoConfig": "configuration_mage.MageConfig",
    "AutoModel": "modeling_mage.MageModel",
    "AutoModelForImageTextToText": "modeling_mage.MageForConditionalGeneration",
    "AutoModelForVision2Seq": "modeling_mage.MageForConditionalGeneration",
}


def _one_cache(cache, past_key_values, warn: bool = False):
    """The KV cache whichever name it came under (`cache` from transformers 5.24, `past_key_values` before).

    With `warn`, the old name warns (a `FutureWarning`, as transformers' own models do) where this transformers
    version has renamed it.
    """
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("Pass the KV cache once, as `cache` or as `past_key_values`, not both.")
    if warn and past_key_values is not None and cache is None and CACHE_NAME == "cache":
        warnings.warn(
            "`past_key_values` is deprecated since transformers 5.24 for MAGE's `forward`. Use `cache` instead.",
            FutureWarning,
            stacklevel=3,
        )
    return cache if cache is not None else past_key_values


def _rope_is_scaled(text_config) -> bool:
    """Whether the LM's RoPE is scaled (linear, dynamic, YaRN, ...): 4.x keeps it in `rope_scaling`, 5.x in
    `rope_parameters` (one dict, or one per attention type)."""
    for field in ("rope_parameters", "rope_scaling"):
        value = getattr(text_config, field, None) or {}
        if not isinstance(value, dict):
            continue
        dicts = (
            [value] if "rope_type" in value or "type" in value else [v for v in value.values() if isinstance(v, dict)]
        )
        if any(d.get("rope_type", d.get("type", "default")) != "default" for d in dicts):
            return True
    return False


class MagePreTrainedModel(PreTrainedModel):
    config_class = MageConfig
    config: MageConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["MageIntelligentAlignmentNetwork", "CLIPEncoderLayer", "SiglipEncoderLayer"]
    _skip_keys_device_placement = [CACHE_NAME]
    _supports_flash_attn = True
    _supports_flash_attn_2 = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _supports_cache_class = True
    _supports_static_cache = True
    _supports_quantized_cache = True
    _can_compile_fullgraph = True

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """`PreTrainedModel.save_pretrained` (safetensors) plus the remote code and an `auto_map` naming
        AutoConfig, AutoModel, AutoModelForImageTextToText (5.x) and AutoModelForVision2Seq (4.x)."""
        if kwargs.get("push_to_hub"):
            raise ValueError("Save locally, then publish the folder with `mage push` (it checks the folder loads).")
        kwargs.setdefault("safe_serialization", True)
        self.config.auto_map = dict(AUTO_MAP)
        result = super().save_pretrained(save_directory, *args, **kwargs)
        source_dir = os.path.dirname(os.path.abspath(__file__))
        for name in REMOTE_CODE_FILES:
            shutil.copyfile(os.path.join(source_dir, name), os.path.join(save_directory, name))
        return result

    @classmethod
    def is_custom_code(cls) -> bool:
        """`False`, so transformers 5.x initialises missing weights as for its own models.

        5.x treats a model defined outside transformers as custom code and then skips every module whose direct
        parameters are all marked initialised, passing that flag down into the built-in vision tower too: CLIP's
        attention and MLP blocks hold no direct parameters, so their own init (per-layer stds) was skipped and
        `from_pretrained` with missing weights gave different weights than `__init__`. The shortcut guards remote
        code that writes weights in place; `_init_weights` below only calls `torch.nn.init` functions, which
        `initialize_weights` already guards against overwriting loaded weights.
        """
        return False

    def _init_weights(self, module: nn.Module) -> None:
        # Only the projector's modules reach here on 5.x; on 4.x also the unwrapped vision transformer (whose
        # weights are then loaded or replaced by `from_vision_text_pretrained`).
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if hasattr(module, "position_embedding") and isinstance(module.position_embedding, nn.Parameter):
            nn.init.normal_(module.position_embedding, mean=0.0, std=std)
        if isinstance(module, MageSemanticEnhancementBlock) and module.attention_bias is not None:
            with torch.no_grad():
                module.attention_bias.copy_(module.locality_bias())


class MageModel(MageImageFeaturesMixin, MagePreTrainedModel):
    """Vision tower + projector + LM decoder (no LM head). The image methods (`get_image_features`,
    `select_vision_features`, `get_placeholder_mask`) come from [`MageImageFeaturesMixin`] in `image_features.py`."""

    _checkpoint_conversion_mapping: dict = {}

    def __init__(self, config: MageConfig):
        super().__init__(config)
        self.vision_tower = unwrap_vision_tower(AutoModel.from_config(config.vision_config))
        self.multi_modal_projector = build_projector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def _check_length(self, inputs: torch.Tensor, cache) -> None:
        """Warn (once) when the sequence runs past the LM's `max_position_embeddings` with unscaled RoPE.

        A warning, not an error: LLaVA has no such guard and transformers' common tests run a 512-position LM on 768
        tokens, scaled (linear, dynamic, YaRN: `rope_parameters` on 5.x, `rope_scaling` on 4.x) or not.
        """
        limit = getattr(self.config.text_config, "max_position_embeddings", None)
        if limit is None or _rope_is_scaled(self.config.text_config) or torch.compiler.is_compiling():
            return  # scaled RoPE is meant to run past the trained length
        total = inputs.shape[1] + _cache_length(cache)
        if total > limit:
            logger.warning_once(
                f"The sequence is {total} tokens long (prompt + cache) but the language model was trained for at most "
                f"max_position_embeddings={limit}; expect degraded output past it (shorten the text after the image "
                "placeholders or lower max_new_tokens)."
            )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        cache=None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        vision_feature_layer: int | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs,
    ) -> MageModelOutputWithPast | tuple:
        r"""
        input_ids (`torch.LongTensor` of shape `(B, L)`): token ids with Q placeholders per image.
        pixel_values (`torch.FloatTensor` of shape `(num_images, 3, H, W)`, *optional*): images in text order.
            Without them, placeholders in `input_ids` are embedded as ordinary tokens (as LLaVA does; warned once).
        cache / past_key_values (`Cache`, *optional*): the KV cache, under either name (transformers 5.24 renamed it;
            the old name warns there).
        output_attentions / output_hidden_states (`bool`, *optional*): the LM's attention maps (eager attention) /
            hidden states, and the vision tower's (in `image_outputs`); default: the configs' flags.
        return_dict (`bool`, *optional*): `False` returns `MageModelOutputWithPast.to_tuple()`.
        vision_feature_layer / vision_feature_select_strategy (*optional*): override the config's, as in LLaVA.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
        cache = _one_cache(cache, past_key_values, warn=True)
        self._check_length(input_ids if input_ids is not None else inputs_embeds, cache)
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        image_features, image_outputs = None, None
        if pixel_values is not None:
            image_outputs = self.get_image_features(
                pixel_values,
                vision_feature_layer=vision_feature_layer,
                vision_feature_select_strategy=vision_feature_select_strategy,
                output_hidden_states=output_hidden_states,
                output_attentions=output_attentions,
                return_dict=True,
            )
            image_features = image_outputs.pooler_output.to(inputs_embeds.device, inputs_embeds.dtype)
            mask = self.get_placeholder_mask(input_ids, inputs_embeds, image_features)
            inputs_embeds = inputs_embeds.masked_scatter(mask, image_features)
        elif (
            input_ids is not None
            and not torch.compiler.is_compiling()  # a data-dependent check would break the compiled decode graph
            and (cache is None or _cache_length(cache) == 0)
            and bool((input_ids == self.config.image_token_id).any())
        ):
            logger.warning_once(
                "The input holds image placeholder tokens but no `pixel_values` were given: they are embedded as "
                "ordinary tokens (as LLaVA does). Pass the images to have them read."
            )

        lm_flags = {
            name: value
            for name, value in (
                ("output_attentions", output_attentions),
                ("output_hidden_states", output_hidden_states),
            )
            if value is not None
        }
        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **{CACHE_NAME: cache},
            **lm_flags,
            **kwargs,
        )
        output = MageModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_features,
            image_outputs=image_outputs,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
        )
        return_dict = return_dict if return_dict is not None else getattr(self.config, "return_dict", True)
        return output if return_dict else output.to_tuple()


def _cache_length(cache) -> int:
    # Static (compileable) caches are skipped: their length is a tensor op that would break a compiled graph, and
    # they enforce their own maximum length.
    if cache is None or getattr(cache, "is_compileable", False):
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    return int(cache[0][0].shape[-2]) if len(cache) else 0


class MageForConditionalGeneration(MagePreTrainedModel, GenerationMixin):
    r"""
    MAGE with an LM head: generation and the ITG loss, plus [`get_itdm_features`] for the ITDM term.

    Example:

    ```python
    >>> from transformers import AutoModelForImageTextToText, AutoProcessor
    >>> model = AutoModelForImageTextToText.from_pretrained("path/to/mage", trust_remote_code=True)
    >>> processor = AutoProcessor.from_pretrained("path/to/mage", trust_remote_code=True)
    >>> messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}]
    >>> prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    >>> inputs = processor(images=image, text=prompt, return_tensors="pt")
    >>> output_ids = model.generate(**inputs, max_new_tokens=20)
    ```
    """

    _checkpoint_conversion_mapping: dict = {}
    _tied_weights_keys = (
        {"lm_head.weight": "model.language_model.embed_tokens.weight"}
        if TRANSFORMERS_MAJOR >= 5
        else ["lm_head.weight"]
    )
    # LLaVA's plans: the head sharded like the tied embedding (the LM's `base_model_tp_plan` comes with the
    # text config); 5.x renamed the style `colwise_rep` → `colwise_gather_output`.
    _tp_plan = {"lm_head": "colwise_gather_output" if TRANSFORMERS_MAJOR >= 5 else "colwise_rep"}

    def __init__(self, config: MageConfig):
        super().__init__(config)
        self.model = MageModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    # ------------------------------------------------------------------------------------------ embeddings / parts
    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def get_decoder(self) -> nn.Module:
        return self.model.language_model

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.vision_tower

    @property
    def multi_modal_projector(self) -> nn.Module:
        return self.model.multi_modal_projector

    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple | torch.Tensor:
        """[`MageModel.get_image_features`] (`output_hidden_states`, `output_attentions`, `return_dict` pass through
        `kwargs`): `pixel_values (num_images, 3, H, W)` → a [`BaseModelOutputWithPooling`] whose `pooler_output
        (num_images, image_seq_length, D_l)` holds the projected image tokens, its tuple, or (4.x, `return_dict=None`)
        that tensor alone."""
        return self.model.get_image_features(
            pixel_values,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            **kwargs,
        )

    # ------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        return_dict: bool | None = None,
        return_logits: bool = True,
        cache=None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        vision_feature_layer: int | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs,
    ) -> MageCausalLMOutputWithPast | tuple:
        r"""
        input_ids (`torch.LongTensor` of shape `(B, L)`): token ids, Q placeholders per image.
        pixel_values (`torch.FloatTensor` of shape `(num_images, 3, H, W)`, *optional*): images in text order.
        labels (`torch.LongTensor` of shape `(B, L)`, *optional*): targets aligned with `input_ids` (the model
            shifts them); -100 where no loss is wanted (prompt, image placeholders, padding).
        logits_to_keep (`int` or `torch.Tensor`): compute logits only for the last `logits_to_keep` positions
            (0 = all), as in transformers' causal LMs.
        return_logits (`bool`, defaults to `True`): with `labels`, `False` computes the LM head only where a label
            is supervised and returns `logits=None`: the same loss and gradients, without the `(B, L, V)` logits that
            dominate a small model's training step (the trainers pass it when they need only the loss).
        return_dict (`bool`, *optional*): `False` returns `MageCausalLMOutputWithPast.to_tuple()` (default:
            `config.return_dict`).
        output_attentions, output_hidden_states, vision_feature_layer, vision_feature_select_strategy: see
            [`MageModel.forward`].
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=_one_cache(cache, past_key_values, warn=True),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        loss, logits = None, None
        if labels is not None and not return_logits:
            loss = self._supervised_positions_loss(hidden_states, labels, **kwargs)
        else:
            slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden_states[:, slice_indices, :])
            if labels is not None:
                loss = self.loss_function(
                    logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
                )
        output = MageCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
            image_outputs=outputs.image_outputs,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
        )
        return_dict = return_dict if return_dict is not None else getattr(self.config, "return_dict", True)
        return output if return_dict else output.to_tuple()

    def _supervised_positions_loss(self, hidden_states: torch.Tensor, labels: torch.LongTensor, **kwargs):
        """The causal-LM loss from the LM head at supervised positions only: `hidden_states (B, L, D)` at position
        t predicts `labels[:, t + 1]`; positions whose next label is -100 are dropped before the `(N, V)` matmul."""
        next_labels = nn.functional.pad(labels, (0, 1), value=-100)[:, 1:].to(hidden_states.device)
        kept = next_labels != -100
        logits = self.lm_head(hidden_states[kept])
        return self.loss_function(
            logits=logits,
            labels=None,
            shift_labels=next_labels[kept],
            vocab_size=self.config.text_config.vocab_size,
            **kwargs,
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        **kwargs,
    ) -> dict:
        """GenerationMixin's inputs plus `pixel_values (num_images, 3, H, W)` at prefill only.

        `inputs_embeds (B, L, D)` is named here so that `generate(inputs_embeds=...)` is allowed (generate checks this
        signature); the placeholders are then found by their embedding.
        """
        # Images enter only at prefill: afterwards the cache holds them and the new ids hold no placeholders.
        # 5.x passes `is_first_iteration` at prefill only; 4.x passes `cache_position`; else the cache length tells.
        # The cache stays in `kwargs` under the name generate used (`cache` from 5.24, `past_key_values` before).
        is_first = kwargs.get("is_first_iteration")
        model_inputs = super().prepare_inputs_for_generation(input_ids, inputs_embeds=inputs_embeds, **kwargs)
        if is_first is None:
            cache_position = kwargs.get("cache_position", model_inputs.get("cache_position"))
            if cache_position is not None:
                is_first = int(cache_position[0]) == 0
            else:
                cache = _one_cache(kwargs.get("cache"), kwargs.get("past_key_values"))
                # not `_cache_length`: that reads 0 for static caches (it must not break a compiled forward)
                is_first = cache is None or int(cache.get_seq_length()) == 0
        if is_first or not kwargs.get("use_cache", True):
            model_inputs["pixel_values"] = pixel_values
        else:
            model_inputs.pop("pixel_values", None)
        return model_inputs

    # ------------------------------------------------------------------------------------------------------ ITDM
    def get_itdm_features(
        self,
        text_input_ids: torch.LongTensor,
        text_attention_mask: torch.Tensor,
        pixel_values: torch.FloatTensor | None = None,
        image_hidden_states: torch.FloatTensor | None = None,
        text_pool_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""
        What the ITDM loss compares (docs/training.md, "Loss"; docs/DECISIONS.md, "ITDM interface"), so the trainer
        never reaches into internals.

        Args:
            text_input_ids (`torch.LongTensor` of shape `(B, T)`): the text alone (caption / answers), no image tokens.
            text_attention_mask (`torch.Tensor` of shape `(B, T)`): 1 for real tokens.
            pixel_values (`torch.FloatTensor` of shape `(B, 3, H, W)`, *optional*): one image per row; or pass
            image_hidden_states (`torch.FloatTensor` of shape `(B, Q, D_l)`, *optional*): the projector output of a
                forward already made (reuses it, with its gradient).
            text_pool_mask (`torch.Tensor` of shape `(B, T)`, *optional*): tokens averaged into `d_llm`
                (defaults to `text_attention_mask`).

        Returns:
            `(d_ian, d_llm)`, each `(B, D_l)`: `d_ian` = mean of `V''` over queries (with gradient); `d_llm` = masked
            mean of the LM's encoding of the text (`config.itdm_text_source`), computed without gradient.
        """
        if image_hidden_states is None:
            if pixel_values is None:
                raise ValueError("get_itdm_features needs `pixel_values` or `image_hidden_states`.")
            image_hidden_states = self.get_image_features(pixel_values, return_dict=True).pooler_output
        d_ian = image_hidden_states.mean(dim=1)
        pool_mask = text_attention_mask if text_pool_mask is None else text_pool_mask
        with torch.no_grad():
            if self.config.itdm_text_source == "embeddings":
                encoded = self.get_input_embeddings()(text_input_ids)
            else:
                outputs = self.model.language_model(
                    input_ids=text_input_ids,
                    attention_mask=text_attention_mask,
                    output_hidden_states=True,
                    use_cache=False,
                    return_dict=True,
                )
                encoded = outputs.hidden_states[self.config.itdm_text_layer]
            weights = pool_mask.to(encoded.dtype).unsqueeze(-1)
            d_llm = (encoded * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return d_ian, d_llm.to(d_ian.dtype)

    # --------------------------------------------------------------------------------------------------- builders
    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str,
        text_model_name_or_path: str,
        tokenizer=None,
        torch_dtype: torch.dtype | None = None,
        **config_kwargs,
    ) -> MageForConditionalGeneration:
        """Stage-1 starting point: a pretrained vision tower (CLIP/SigLIP, full or vision-only checkpoint) and a
        pretrained causal LM, joined by a freshly initialised projector.

        Pass the `tokenizer` of the processor built by `MageProcessor.from_vision_text_pretrained` so the LM's
        embeddings are resized to it and `image_token_id` is taken from it.
        """
        vision_config = AutoConfig.from_pretrained(vision_model_name_or_path)
        vision_config = getattr(vision_config, "vision_config", vision_config)
        vision_model = AutoModel.from_pretrained(vision_model_name_or_path, torch_dtype=torch_dtype)
        vision_model = getattr(vision_model, "vision_model", vision_model)
        language_model = AutoModelForCausalLM.from_pretrained(text_model_name_or_path, torch_dtype=torch_dtype)
        text_config = language_model.config
        if tokenizer is not None:
            config_kwargs.setdefault("image_token_id", tokenizer.convert_tokens_to_ids("<image>"))
        config_kwargs.setdefault("tie_word_embeddings", getattr(text_config, "tie_word_embeddings", False))
        config = MageConfig(vision_config=vision_config.to_dict(), text_config=text_config.to_dict(), **config_kwargs)
        model = cls(config)
        if torch_dtype is not None:
            model = model.to(torch_dtype)
        model.model.vision_tower.load_state_dict(unwrap_vision_tower(vision_model).state_dict())
        model.model.language_model.load_state_dict(language_model.get_decoder().state_dict())
        model.lm_head.load_state_dict(language_model.get_output_embeddings().state_dict())
        if tokenizer is not None and len(tokenizer) != model.config.text_config.vocab_size:
            model.resize_token_embeddings(len(tokenizer))
        return model


__all__ = [
    "MageModel",
    "MageForConditionalGeneration",
    "MagePreTrainedModel",
    "MageModelOutputWithPast",
    "MageCausalLMOutputWithPast",
    "QUANTIZATION_SKIP_MODULES",
]
