"""One chat turn rendered by the processor's template, left-padded batches and greedy `model.generate`.

Evaluation (`evaluation.runner`), the MAGE tool and the agent (`tool_use`) and `mage serve` build their prompts here, so
a question gets the same string, and so the same greedy answer, on every path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def chat_text(processor: Any, question: str, *, with_image: bool = True, system: str | None = None) -> str:
    """The prompt string: ``[system] USER: [<image>\\n]question ASSISTANT:`` via ``processor.apply_chat_template``
    (``system=None`` keeps the template's default system prompt)."""
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_left_padded(model: Any, processor: Any, texts: Sequence[str], images: Sequence[Any] | None = None) -> Any:
    """`processor(images=..., text=texts, padding=True)` with left padding, on `model.device`, pixel values in
    `model.dtype`. The tokenizer's `padding_side` is restored afterwards: the processor may be shared (a server, a
    trainer's evaluation)."""
    tokenizer = processor.tokenizer
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        kwargs = {"images": list(images)} if images else {}
        inputs = processor(text=list(texts), return_tensors="pt", padding=True, **kwargs).to(model.device)
    finally:
        tokenizer.padding_side = old_side
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return inputs


def greedy_answers(
    model: Any, processor: Any, prompts: Sequence[str], images: Sequence[Any] | None = None, max_new_tokens: int = 128
) -> list[str]:
    """Greedy continuations of `prompts` (one left-padded batch; `images` one per prompt or `None`), decoded without
    special tokens and stripped."""
    import torch  # heavy

    tokenizer = processor.tokenizer
    inputs = encode_left_padded(model, processor, prompts, images)
    with torch.inference_mode():
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def generate_text(
    model: Any,
    processor: Any,
    question: str,
    *,
    image: Any = None,
    system: str | None = None,
    max_new_tokens: int = 128,
) -> str:
    """Greedy answer (special tokens stripped) to ``question`` about ``image`` (a PIL image or ``None``)."""
    prompt = chat_text(processor, question, with_image=image is not None, system=system)
    return greedy_answers(model, processor, [prompt], None if image is None else [image], max_new_tokens)[0]


def generate_texts(
    model: Any,
    processor: Any,
    questions: Sequence[str],
    *,
    systems: Sequence[str | None] | None = None,
    max_new_tokens: int = 128,
) -> list[str]:
    """Greedy text-only answers for a batch of questions (left padding), one optional system prompt each."""
    systems = systems or [None] * len(questions)
    prompts = [chat_text(processor, q, with_image=False, system=s) for q, s in zip(questions, systems)]
    return greedy_answers(model, processor, prompts, None, max_new_tokens)


__all__ = ["chat_text", "encode_left_padded", "generate_text", "generate_texts", "greedy_answers"]
