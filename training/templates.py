"""Conversation → `input_ids` + `labels` with everything but the assistant answers masked.

Two templates, both rendered from one source of truth:

- `"plain"` (stage 1, LLaVA `preprocess_plain`): `"<image>" + caption + "\n"`; the caption and its newline are the
  target, BOS and the image placeholders are masked.
- `"vicuna_v1"` (stages 2-3): the processor's chat template (`processor.apply_chat_template`), LLaVA's conv_vicuna_v1
  `"{system} USER: <image>\n{q} ASSISTANT: {a}</s>USER: …"`. Targets are each answer *with* its leading space and its
  `</s>`, exactly LLaVA's `preprocess_v1` targets.

Masking never tokenises turns separately and sums lengths (the LLaVA "tokenization mismatch → loss 0" bug): the
whole conversation is tokenised once and each answer boundary is found by tokenising the text *up to* that boundary,
which must be a token prefix of the whole; if it is not, the sample is refused with `SampleError` (then skipped and
counted), never trained with shifted labels.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = -100
IMAGE_TOKEN = "<image>"
TEMPLATES = ("plain", "vicuna_v1")
ROLE_MAP = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class SampleError(ValueError):
    """A sample that cannot be trained on; `reason` is a short category for the skip report."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class EncodedSample:
    """`input_ids`/`labels`: lists of equal length L; `num_images`: image markers expanded in `input_ids`."""

    input_ids: list[int]
    labels: list[int]
    num_images: int
    truncated: bool = False


def conversation_to_messages(conversations: list[dict], has_image: bool) -> list[dict]:
    """LLaVA turns (`{"from": "human"|"gpt"|"system", "value"}`) → HF chat messages.

    The `<image>` marker is removed from the text and the image is put first in the first user turn, as LLaVA's
    `preprocess_multimodal` does ("<image>\n" + question).
    """
    messages, image_placed = [], False
    for turn in conversations:
        role = ROLE_MAP[turn["from"]]
        text = turn["value"]
        if role == "system":
            messages.append({"role": "system", "content": [{"type": "text", "text": text}]})
            continue
        content = []
        if role == "user" and has_image and not image_placed:
            content.append({"type": "image"})
            text = text.replace(IMAGE_TOKEN, "").strip()
            image_placed = True
        content.append({"type": "text", "text": text})
        messages.append({"role": role, "content": content})
    return messages


class ConversationEncoder:
    """Tokenises LLaVA conversations with a `MageProcessor` into masked training samples.

    Args:
        processor: a `MageProcessor` (its tokenizer, chat template and `num_image_tokens` Q are used).
        template: `"plain"` or `"vicuna_v1"`.
        max_length: samples longer than this are cut *after* the last image placeholder, or refused when the cut
            would go through one (or would leave no answer token).
    """

    def __init__(self, processor, template: str, max_length: int):
        if template not in TEMPLATES:
            raise ValueError(f"template={template!r} is not supported; expected one of {list(TEMPLATES)}.")
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.template = template
        self.max_length = max_length
        self.num_image_tokens = processor.num_image_tokens
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    # ------------------------------------------------------------------------------------------------ rendering
    def render(self, conversations: list[dict], has_image: bool) -> tuple[str, list[tuple[int, int]]]:
        """The whole text and the character spans `[start, end)` of every target."""
        if self.template == "plain":
            return self._render_plain(conversations, has_image)
        messages = conversation_to_messages(conversations, has_image)
        whole = self.processor.apply_chat_template(messages, tokenize=False)
        spans = []
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start_text = self.processor.apply_chat_template(
                messages[:index], tokenize=False, add_generation_prompt=True
            )
            end_text = self.processor.apply_chat_template(messages[: index + 1], tokenize=False)
            if not (whole.startswith(start_text) and whole.startswith(end_text)):
                raise SampleError("template mismatch", "the chat template does not render turns as a prefix")
            spans.append((len(start_text), len(end_text)))
        return whole, spans

    @staticmethod
    def _render_plain(conversations: list[dict], has_image: bool) -> tuple[str, list[tuple[int, int]]]:
        if not has_image:
            raise SampleError("plain template needs an image", "stage-1 rows are image + caption")
        turns = [t for t in conversations if ROLE_MAP[t["from"]] != "system"]
        if len(turns) != 2 or ROLE_MAP[turns[1]["from"]] != "assistant":
            raise SampleError("plain template needs one human and one gpt turn", f"got {len(turns)} turns")
        prefix = IMAGE_TOKEN
        whole = prefix + turns[1]["value"] + "\n"
        return whole, [(len(prefix), len(whole))]

    # ----------------------------------------------------------------------------------------------- tokenising
    def _tokenize(self, text: str) -> list[int]:
        expanded = text.replace(IMAGE_TOKEN, IMAGE_TOKEN * self.num_image_tokens)
        return list(self.tokenizer(expanded, add_special_tokens=True)["input_ids"])

    def encode(self, conversations: list[dict], has_image: bool) -> EncodedSample:
        """Masked sample; raises `SampleError` for anything that cannot be trained on correctly."""
        whole, spans = self.render(conversations, has_image)
        input_ids = self._tokenize(whole)
        labels = [IGNORE_INDEX] * len(input_ids)
        for start, end in spans:
            first = self._boundary(whole, start, input_ids)
            last = self._boundary(whole, end, input_ids)
            labels[first:last] = input_ids[first:last]
        num_images = whole.count(IMAGE_TOKEN)
        found = input_ids.count(self.image_token_id)
        if found != num_images * self.num_image_tokens:
            raise SampleError(
                "image token in text", f"{found} placeholder tokens for {num_images} image(s) × {self.num_image_tokens}"
            )
        sample = EncodedSample(input_ids, labels, num_images)
        if len(input_ids) > self.max_length:
            sample = self._truncate(sample)
        if all(label == IGNORE_INDEX for label in sample.labels):
            raise SampleError("no answer tokens", "nothing to learn from after masking")
        return sample

    def _boundary(self, whole: str, char_index: int, input_ids: list[int]) -> int:
        """Token index where `whole[:char_index]` ends; the prefix must tokenise as a prefix of the whole."""
        prefix_ids = self._tokenize(whole[:char_index])
        if input_ids[: len(prefix_ids)] != prefix_ids:
            raise SampleError(
                "tokenization mismatch",
                f"tokens of the text before character {char_index} are not a prefix of the whole conversation's",
            )
        return len(prefix_ids)

    def _truncate(self, sample: EncodedSample) -> EncodedSample:
        positions = [i for i, token in enumerate(sample.input_ids) if token == self.image_token_id]
        if positions and positions[-1] >= self.max_length:
            raise SampleError(
                "truncation through image",
                f"{len(sample.input_ids)} tokens, the image ends at {positions[-1] + 1} > max_length={self.max_length}",
            )
        cut = self.max_length
        return EncodedSample(sample.input_ids[:cut], sample.labels[:cut], sample.num_images, truncated=True)


__all__ = [
    "ConversationEncoder",
    "EncodedSample",
    "SampleError",
    "conversation_to_messages",
    "IGNORE_INDEX",
    "TEMPLATES",
]
