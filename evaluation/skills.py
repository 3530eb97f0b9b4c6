"""Per-skill accuracy on a held-out short-answer set (`skills.jsonl`: `skill`, `id`, `question`, `answer`, `image`,
as `shapeworld.skills.write_skill_sets` writes it).

Each question is asked as LLaVA-1.5 asks POPE's (the question + "Answer the question using a single word or
phrase.", greedy); an answer is right when its first word, lower-cased and without punctuation, equals the expected
one-word answer.
"""

from __future__ import annotations

import string
from collections import defaultdict
from pathlib import Path

from .records import BenchmarkFormatError, EvalRecord, json_object
from .runner import generate_batch


def read_skill_set(path: str | Path) -> list[EvalRecord]:
    """The records of a `skills.jsonl`; a malformed line is named (file:line, field)."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        source = f"{path}:{number}"
        row = json_object(line, source)
        missing = [k for k in ("skill", "id", "question", "answer", "image") if not isinstance(row.get(k), str)]
        if missing:
            raise BenchmarkFormatError(f"{source}: missing or non-string field(s) {missing}")
        records.append(
            EvalRecord(
                benchmark="pope",  # LLaVA's short-answer prompt
                uid=row["id"],
                question=row["question"],
                answer=row["answer"],
                subtask=row["skill"],
                image_path=str(path.parent / row["image"]),
                source=source,
            )
        )
    return records


def first_word(text: str) -> str:
    """`"Yes, there is."` → `"yes"`; `""` → `""`."""
    words = text.strip().split()
    return words[0].strip(string.punctuation).lower() if words else ""


def skill_accuracy(
    model, processor, path: str | Path, batch_size: int = 32, blank_images: bool = False, max_new_tokens: int = 4
) -> dict[str, float]:
    """`{skill: accuracy in [0, 1]}` over every question of `path`, plus `"questions": {skill: count}`."""
    records = read_skill_set(path)
    right, total = defaultdict(int), defaultdict(int)
    for begin in range(0, len(records), batch_size):
        batch = records[begin : begin + batch_size]
        answers, _ = generate_batch(model, processor, batch, max_new_tokens, blank=blank_images)
        for record, answer in zip(batch, answers):
            total[record.subtask] += 1
            right[record.subtask] += first_word(answer) == record.answer.lower()
    scores: dict = {skill: right[skill] / total[skill] for skill in total}
    scores["questions"] = dict(total)
    return scores


__all__ = ["first_word", "read_skill_set", "skill_accuracy"]
