"""Held-out per-skill question sets: one short-answer question per scene, a few hundred per skill, in the phrasings
the training data uses (`shapeworld.text`), so a report can say which skill a model has and which it lacks.

Skills: `existence` (half present, half absent; an absent object shares its shape or colour with a present one when
the scene allows, as POPE's popular/adversarial negatives do), `colour`, `shape`, `count` (of one shape), `relation`
(left/right/above/below, yes/no). Answers are one word ("Yes", "red", "2").
"""

from __future__ import annotations

import json
from pathlib import Path

from . import text as T
from .world import Difficulty, get_difficulty, item_rng, render_scene, sample_scene

SKILLS = ("existence", "colour", "shape", "count", "relation")


_MAKERS = {
    "existence": lambda rng, scene, d: T.existence_question(rng, scene, d, negatives="near"),
    "colour": lambda rng, scene, d: (T._q_colour(rng, scene, d) or (None, None))[:2],
    "shape": lambda rng, scene, d: (T._q_shape(rng, scene, d) or (None, None))[:2],
    "count": lambda rng, scene, d: T._q_count_shape(rng, scene, d)[:2],
    "relation": lambda rng, scene, d: (T._q_relation(rng, scene, d) or (None, None))[:2],
}


def skill_items(skill: str, n: int, seed: int, difficulty: str | Difficulty = "easy") -> list[dict]:
    """`n` items `{"skill", "id", "question", "answer", "scene"}` of one skill; a function of (seed, skill, index)."""
    if skill not in _MAKERS:
        raise ValueError(f"unknown skill {skill!r}; choose one of {SKILLS}")
    d = get_difficulty(difficulty)
    items = []
    for index in range(n):
        rng = item_rng(seed, f"skill-{skill}", index)
        while True:
            scene = sample_scene(rng, d, f"{skill}-{index}")
            question, answer = _MAKERS[skill](rng, scene, d)
            if question is not None:
                break
        items.append({"skill": skill, "id": f"{skill}-{index}", "question": question, "answer": answer, "scene": scene})
    return items


def write_skill_sets(
    folder: str | Path, n_per_skill: int, seed: int, difficulty: str | Difficulty = "easy", image_size: int = 48
) -> Path:
    """Write `folder/skills.jsonl` (`skill`, `id`, `question`, `answer`, `image`) and the PNGs; returns the JSONL."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for skill in SKILLS:
        for item in skill_items(skill, n_per_skill, seed, difficulty):
            image = f"images/{item['id']}.png"
            render_scene(item["scene"], image_size).save(folder / image)
            rows.append({k: item[k] for k in ("skill", "id", "question", "answer")} | {"image": image})
    path = folder / "skills.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


__all__ = ["SKILLS", "skill_items", "write_skill_sets"]
