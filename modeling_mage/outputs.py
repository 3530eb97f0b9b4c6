# Copyright 2026 The MAGE-HF authors. Licensed under the Apache License, Version 2.0.
"""Outputs of [`MageModel`] and [`MageForConditionalGeneration`]: transformers' LM outputs plus the image side.

The KV cache field is the one the installed transformers declares (`cache` from 5.24, `past_key_values` before).

Remote code: imports only torch and transformers. `modeling_mage.py` imports this file directly (transformers 4.57
copies only the modeling file's direct relative imports) and lists it in `REMOTE_CODE_FILES`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast


@dataclass
class MageModelOutputWithPast(BaseModelOutputWithPast):
    r"""
    Outputs of [`MageModel`]: the LM's outputs plus the IAN output.

    image_hidden_states (`torch.FloatTensor` of shape `(num_images, image_seq_length, hidden_size)`, *optional*):
        Projector output (`V''` for the IAN) that was scattered into the LM input.
    image_outputs ([`BaseModelOutputWithPooling`], *optional*):
        What [`MageModel.get_image_features`] returned (transformers 5.x multimodal outputs): the vision tower's
        `last_hidden_state (num_images, N, D_v)`, `hidden_states`/`attentions` when asked for, and the projector
        output as `pooler_output (num_images, image_seq_length, hidden_size)`. `None` without images.
    """

    image_hidden_states: torch.FloatTensor | None = None
    image_outputs: BaseModelOutputWithPooling | None = None


@dataclass
class MageCausalLMOutputWithPast(CausalLMOutputWithPast):
    r"""
    Outputs of [`MageForConditionalGeneration`]: transformers' causal-LM outputs (`loss` = ITG when `labels` are
    given, `logits (batch_size, sequence_length, vocab_size)`, the KV cache — `cache` from 5.24, `past_key_values`
    before — `hidden_states`, `attentions`) plus:

    image_hidden_states (`torch.FloatTensor` of shape `(num_images, image_seq_length, hidden_size)`, *optional*):
        Projector output (`V''`). Its mean over queries is `d_ian` of the ITDM loss.
    image_outputs ([`BaseModelOutputWithPooling`], *optional*):
        The vision side as [`MageModel.get_image_features`] returned it (`pooler_output` = `image_hidden_states`).
    """

    image_hidden_states: torch.FloatTensor | None = None
    image_outputs: BaseModelOutputWithPooling | None = None


__all__ = ["MageModelOutputWithPast", "MageCausalLMOutputWithPast"]
