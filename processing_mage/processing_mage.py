# Copyright 2026 The MAGE-HF authors. Licensed under the Apache License, Version 2.0.
"""MAGE processor: any image processor + any tokenizer + the vicuna_v1 chat template.

Remote code: copied flat into every checkpoint, so nothing but transformers + the standard library, on 4.51+ and 5.x.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from transformers import AutoImageProcessor, AutoTokenizer
from transformers import __version__ as transformers_version
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

IMAGE_TOKEN = "<image>"
TRANSFORMERS_MAJOR = int(transformers_version.split(".")[0])

VICUNA_V1_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# LLaVA's conv_vicuna_v1 (SeparatorStyle.TWO, sep=" ", sep2="</s>"):
#   "{system} USER: <image>\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT:"
# Images of a message are rendered first, each as "<image>\n" (LLaVA moves the image to the front of the turn).


def vicuna_v1_chat_template(system_prompt: str = VICUNA_V1_SYSTEM_PROMPT) -> str:
    """The vicuna_v1 chat template whose default system message is `system_prompt` (a leading system message still
    overrides it). LLaVA's prompt is the default; a small model trained from scratch may use a short one."""
    escaped = system_prompt.replace("\\", "\\\\").replace("'", "\\'")
    return (
        "{%- set ns = namespace(system='" + escaped + "') -%}"
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- if messages[0]['content'] is string -%}{%- set ns.system = messages[0]['content'] -%}"
        "{%- else -%}{%- set ns.system = messages[0]['content'] | selectattr('type', 'equalto', 'text') "
        "| map(attribute='text') | join(' ') -%}{%- endif -%}"
        "{%- set loop_messages = messages[1:] -%}"
        "{%- else -%}{%- set loop_messages = messages -%}{%- endif -%}"
        "{{- ns.system + ' ' -}}"
        "{%- for message in loop_messages -%}"
        "{%- if message['role'] == 'user' -%}{{- 'USER: ' -}}"
        "{%- elif message['role'] == 'assistant' -%}{{- 'ASSISTANT: ' -}}"
        "{%- else -%}{{- raise_exception('vicuna_v1 knows the roles system, user and assistant, got ' + message['role']) -}}"
        "{%- endif -%}"
        "{%- if message['content'] is string -%}{{- message['content'] -}}"
        "{%- else -%}"
        "{%- for item in message['content'] if item['type'] == 'image' -%}{{- '<image>\\n' -}}{%- endfor -%}"
        "{{- message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -}}"
        "{%- endif -%}"
        "{%- if message['role'] == 'user' -%}{{- ' ' -}}{%- else -%}{{- '</s>' -}}{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
    )


VICUNA_V1_CHAT_TEMPLATE = vicuna_v1_chat_template()


def _flatten_images(images, num_texts: int) -> tuple[list, list[int] | None]:
    """Images as one flat list (text order) and, when given nested per text, the count per text."""
    if images is None:
        return [], None
    if not isinstance(images, (list, tuple)):
        return [images], None
    if images and all(isinstance(item, (list, tuple)) for item in images):
        if len(images) != num_texts:
            raise ValueError(f"Got {len(images)} image lists for {num_texts} texts; pass one list per text.")
        return [image for group in images for image in group], [len(group) for group in images]
    return list(images), None


def _to_rgb(image):
    # Documented handling: PIL images of any mode (RGBA, L, P, …) are converted to RGB; arrays/tensors pass through.
    if hasattr(image, "convert") and getattr(image, "mode", "RGB") != "RGB":
        return image.convert("RGB")
    return image


OTHER_MODALITIES = ("videos", "video", "audio", "audios")


class MageProcessor(ProcessorMixin):
    r"""
    Builds MAGE inputs: each `<image>` in the text becomes `num_image_tokens` placeholder tokens (Q for the IAN),
    images become `pixel_values`.

    Args:
        image_processor: any image processor (CLIPImageProcessor for CLIP towers).
        tokenizer: any tokenizer holding the `<image>` special token.
        num_image_tokens (`int`): placeholder tokens per image (the model's `config.image_seq_length`).
        chat_template (`str`, *optional*): defaults to LLaVA's vicuna_v1 (`VICUNA_V1_CHAT_TEMPLATE`).
        image_token (`str`, *optional*, defaults to `"<image>"`).

    `__call__(images=..., text=...)` returns `input_ids (B, L)`, `attention_mask (B, L)` and
    `pixel_values (num_images, 3, H, W)`; never `token_type_ids`.
    """

    attributes = ["image_processor", "tokenizer"]
    if TRANSFORMERS_MAJOR < 5:  # 5.x infers the sub-processors from __init__ and warns about these
        image_processor_class = "AutoImageProcessor"
        tokenizer_class = "AutoTokenizer"
    valid_kwargs = ["chat_template", "num_image_tokens", "image_token"]

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        num_image_tokens: int = 144,
        chat_template: str | None = None,
        image_token: str = IMAGE_TOKEN,
        **kwargs,
    ):
        self.num_image_tokens = num_image_tokens
        self.image_token = image_token
        if chat_template is None:
            chat_template = VICUNA_V1_CHAT_TEMPLATE
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(
                f"The tokenizer has no {image_token!r} token; build the processor with "
                "MageProcessor.from_vision_text_pretrained or add it with tokenizer.add_special_tokens."
            )

    # ---------------------------------------------------------------------------------------------------- __call__
    def __call__(
        self,
        images=None,
        text: str | Sequence[str] | None = None,
        return_tensors: str | None = "pt",
        padding: bool | str = False,
        truncation: bool | None = None,
        max_length: int | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Tokenise `text` (a string or a list) with every `<image>` expanded and preprocess `images`.

        `images`: one image, a flat list in text order, or one list per text. Their number must equal the number
        of `<image>` markers. Truncation that would cut through image placeholders raises a `ValueError`.
        """
        if text is None:
            raise ValueError("MageProcessor needs `text` (use '<image>' where each image goes).")
        # transformers' chat-template and pipeline code pass every modality it knows (4.57: `videos=None`, 5.x:
        # `audio`, …); MAGE reads images only, so empty ones are dropped and given ones refused.
        for modality in OTHER_MODALITIES:
            if kwargs.pop(modality, None) is not None:
                raise ValueError(f"MageProcessor takes images and text only; `{modality}` was given.")
        texts = [text] if isinstance(text, str) else list(text)
        flat_images, per_text_counts = _flatten_images(images, len(texts))
        marker_counts = [t.count(self.image_token) for t in texts]
        self._check_image_counts(marker_counts, len(flat_images), per_text_counts)

        expanded = [t.replace(self.image_token, self.image_token * self.num_image_tokens) for t in texts]
        kwargs.pop("return_token_type_ids", None)
        text_inputs = self.tokenizer(
            expanded,
            return_tensors=return_tensors,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            return_token_type_ids=False,
            **kwargs,
        )
        self._check_placeholders_survived(text_inputs["input_ids"], marker_counts)
        data = dict(text_inputs)
        if flat_images:
            image_inputs = self.image_processor(
                [_to_rgb(image) for image in flat_images], return_tensors=return_tensors
            )
            data["pixel_values"] = image_inputs["pixel_values"]
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _check_image_counts(self, marker_counts: list[int], num_images: int, per_text_counts: list[int] | None):
        if per_text_counts is not None:
            for row, (markers, given) in enumerate(zip(marker_counts, per_text_counts)):
                if markers != given:
                    raise ValueError(
                        f"Text {row} has {markers} {self.image_token!r} marker(s) but {given} image(s) were given for it."
                    )
        if sum(marker_counts) != num_images:
            raise ValueError(
                f"The text holds {sum(marker_counts)} {self.image_token!r} marker(s) (per text: {marker_counts}) but "
                f"{num_images} image(s) were given; put one {self.image_token!r} where each image goes."
            )

    def _check_placeholders_survived(self, input_ids, marker_counts: list[int]):
        for row, (ids, markers) in enumerate(zip(input_ids, marker_counts)):
            ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
            found = sum(1 for token in ids if token == self.image_token_id)
            if found != markers * self.num_image_tokens:
                raise ValueError(
                    f"Text {row}: expected {markers} × {self.num_image_tokens} image placeholder tokens after "
                    f"tokenisation, found {found}. Either `max_length` truncated through an image (raise "
                    "`max_length` or shorten the text after the image) or the tokenizer splits "
                    f"{self.image_token!r} (it must be a single special token)."
                )

    # ------------------------------------------------------------------------------------------------ pass-through
    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]

    # ------------------------------------------------------------------------------------------------------ saving
    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Save as usual, then make the tokenizer files loadable by transformers 4.x as well (docs/DECISIONS.md,
        Processor: "4.x portability of saved files")."""
        result = super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        _make_tokenizer_config_portable(os.path.join(save_directory, "tokenizer_config.json"))
        # 4.x reads the image processor from preprocessor_config.json and breaks on a nested copy of it.
        self.image_processor.save_pretrained(save_directory)
        _drop_nested_image_processor(os.path.join(save_directory, "processor_config.json"))
        return result

    # ---------------------------------------------------------------------------------------------------- builders
    @classmethod
    def from_vision_text_pretrained(
        cls, vision_model_name_or_path: str, text_model_name_or_path: str, num_image_tokens: int = 144, **kwargs
    ) -> MageProcessor:
        """The processor for a model built by `MageForConditionalGeneration.from_vision_text_pretrained`:
        the tower's image processor, the LM's tokenizer with `<image>` added and a pad token if it had none."""
        image_processor = AutoImageProcessor.from_pretrained(vision_model_name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(text_model_name_or_path)
        prepare_tokenizer(tokenizer)
        return cls(image_processor, tokenizer, num_image_tokens=num_image_tokens, **kwargs)


def prepare_tokenizer(tokenizer) -> None:
    """Make an LM tokenizer ready for MAGE, as LLaVA does for Vicuna:

    - add `<image>` as a special token (one id, never split);
    - set a pad token when missing (the unk token, else eos);
    - prepend BOS to every encoded text when the tokenizer has one (some 5.x Llama tokenizers do not by default):
      prompts then start with `<s>` exactly as in LLaVA's training and evaluation;
    - pad on the left, as llava-hf's saved tokenizers do: batched `generate` needs it, and MAGE's training collator
      pads on its own.
    """
    tokenizer.padding_side = "left"
    if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) in (None, tokenizer.unk_token_id):
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    if tokenizer.bos_token_id is not None and tokenizer("a")["input_ids"][:1] != [tokenizer.bos_token_id]:
        tokenizer.add_bos_token = True
        if hasattr(tokenizer, "update_post_processor"):
            tokenizer.update_post_processor()
        if tokenizer("a")["input_ids"][:1] != [tokenizer.bos_token_id]:
            raise ValueError(
                f"Could not make {type(tokenizer).__name__} prepend its BOS token {tokenizer.bos_token!r}."
            )


def _drop_nested_image_processor(path: str) -> None:
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    if config.pop("image_processor", None) is not None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, ensure_ascii=False)


def _make_tokenizer_config_portable(path: str) -> None:
    # transformers 5.x may write `"tokenizer_class": "TokenizersBackend"` and `extra_special_tokens` as a list;
    # 4.x knows neither. Write the real fast class and `additional_special_tokens` instead.
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    changed = False
    has_fast_file = os.path.isfile(os.path.join(os.path.dirname(path), "tokenizer.json"))
    if config.get("tokenizer_class") == "TokenizersBackend" or (
        config.get("tokenizer_class") is None and has_fast_file
    ):
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        changed = True
    extra = config.get("extra_special_tokens")
    if isinstance(extra, list):
        config.setdefault("additional_special_tokens", extra)
        config.pop("extra_special_tokens")
        changed = True
    if changed:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, ensure_ascii=False)


__all__ = [
    "MageProcessor",
    "IMAGE_TOKEN",
    "VICUNA_V1_CHAT_TEMPLATE",
    "VICUNA_V1_SYSTEM_PROMPT",
    "prepare_tokenizer",
    "vicuna_v1_chat_template",
]
