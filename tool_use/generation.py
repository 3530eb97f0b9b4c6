"""Greedy generation with MAGE for the agent and the MAGE tool: one chat turn, optional image and system prompt."""

from __future__ import annotations

from typing import Any


def chat_text(processor: Any, question: str, *, with_image: bool, system: str | None = None) -> str:
    """The prompt string: ``[system] USER: [<image>\\n]question ASSISTANT:`` via ``processor.apply_chat_template``."""
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


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
    if image is not None:
        inputs = processor(images=[image], text=[prompt], return_tensors="pt")
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    else:
        inputs = processor(text=[prompt], return_tensors="pt")
    inputs = inputs.to(model.device)
    new_tokens = _greedy_new_tokens(model, processor.tokenizer, inputs, max_new_tokens)
    return processor.tokenizer.decode(new_tokens[0], skip_special_tokens=True).strip()


def generate_texts(
    model: Any,
    processor: Any,
    questions: list[str],
    *,
    systems: list[str | None] | None = None,
    max_new_tokens: int = 128,
) -> list[str]:
    """Greedy text-only answers for a batch of questions (left padding), one optional system prompt each."""
    systems = systems or [None] * len(questions)
    prompts = [chat_text(processor, q, with_image=False, system=s) for q, s in zip(questions, systems)]
    tokenizer = processor.tokenizer
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        inputs = processor(text=prompts, return_tensors="pt", padding=True).to(model.device)
    finally:
        tokenizer.padding_side = old_side
    new_tokens = _greedy_new_tokens(model, tokenizer, inputs, max_new_tokens)
    return [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def _greedy_new_tokens(model: Any, tokenizer: Any, inputs: Any, max_new_tokens: int):
    """Greedy `model.generate` on the processor's `inputs`; the tokens after the prompt, `(B, new)`."""
    import torch  # heavy

    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return out[:, inputs["input_ids"].shape[1] :]


__all__ = ["chat_text", "generate_text", "generate_texts"]
