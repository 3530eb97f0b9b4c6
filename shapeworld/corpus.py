"""`text_corpus` — every kind of text the world can produce, for training a closed-vocabulary tokenizer.

It sits above the generators it reads (`text`, `benchmarks`, `tools`), so none of them imports it.
"""

from __future__ import annotations

from collections.abc import Iterator

from .benchmarks import benchmark_items, prompt_texts
from .text import QUESTION_TYPES, caption, instruction_turns, vocabulary_sentences
from .tools import tool_corpus
from .world import Difficulty, get_difficulty, item_rng, sample_scene


def text_corpus(
    num_scenes: int = 200, seed: int = 0, difficulty: str | Difficulty | dict | None = "hard"
) -> Iterator[str]:
    """Every kind of text the world produces: vocabulary lines, captions, instructions and answers, benchmark prompts
    (MME/POPE/MMBench EN+CN/SEED with the LLaVA suffixes) and tool requests with their plan JSON.

    Deterministic; `num_scenes` scenes per part. The default difficulty "hard" uses every colour, shape and the
    written words, so a tokenizer trained on it covers any difficulty.
    """
    d = get_difficulty(difficulty)
    yield from vocabulary_sentences()
    for i in range(num_scenes):
        rng = item_rng(seed, "corpus", i)
        scene = sample_scene(rng, d, f"corpus-{i}")
        yield caption(scene)
        for question, answer in instruction_turns(rng, scene, d, max_turns=len(QUESTION_TYPES)):
            yield question
            yield answer
    for benchmark in ("mme", "pope", "mmbench", "seed"):
        for item in benchmark_items(benchmark, max(8, num_scenes // 4), seed, d):
            yield from prompt_texts(benchmark, item)
    yield from tool_corpus(max(8, num_scenes // 4), seed, d)


__all__ = ["text_corpus"]
