"""Prompts exactly as LLaVA-1.5's evaluation scripts build them, rendered with the processor's chat template.

LLaVA puts `<image>\\n` before the question and uses the vicuna_v1 conversation; `MageProcessor`'s chat template renders
`{system} USER: <image>\\n{question} ASSISTANT:` for one user message with an image (`inference.chat_text`), which is
the same string.
"""

from __future__ import annotations

from . import mmbench, mme, pope, seed
from .records import EvalRecord

_BUILDERS = {
    "mme": mme.build_prompt,
    "pope": pope.build_prompt,
    "mmbench": mmbench.build_prompt,
    "mmbench_cn": mmbench.build_prompt,
    "seed": seed.build_prompt,
}


def question_text(record: EvalRecord) -> str:
    """The user turn's text for generation (LLaVA-1.5's question files)."""
    return _BUILDERS[record.benchmark](record)


def likelihood_query(record: EvalRecord) -> tuple[str, list[str], list[str]]:
    """`(user text, continuations, letters)` for likelihood ranking.

    SEED: the question alone, continuations = option texts (SEED-Bench's protocol). MMBench: LLaVA's full prompt with the
    options listed, continuations = the option letters (so every circular rotation is a different question).
    """
    letters = list(record.options)
    if record.benchmark == "seed":
        return seed.build_likelihood_prompt(record), [record.options[k] for k in letters], letters
    if record.benchmark in ("mmbench", "mmbench_cn"):
        return mmbench.build_prompt(record), letters, letters
    raise ValueError(f"likelihood scoring is for SEED and MMBench, not {record.benchmark!r}; use scoring='generate'")


__all__ = ["likelihood_query", "question_text"]
