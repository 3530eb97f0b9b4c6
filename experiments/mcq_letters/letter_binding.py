"""Can a demo checkpoint answer a multiple-choice question with the right letter when the answer is in its context?

MMBench scores letters (CircularEval: every rotation of the options right). A model that knows the colour of the
circle still fails it unless it can map "blue" to the letter in front of "blue" among the options. This script asks
the question without an image, with the scene's caption in front ("In the picture: …", stage 0's in-context format)
and without it, and scores the first answer token (teacher-forced argmax, as the ladder scores):

- `train_choice`: the stage-2 multiple-choice rows (`shapeworld.text.QUESTION_TYPES["choice"]`);
- `mmbench/<category>`: the demo's MMBench questions (`shapeworld.benchmark_questions.mmbench_item`), each in its
  four rotations; `circular` is the share of questions right in all four.

    python experiments/mcq_letters/letter_binding.py --model /tmp/demo_r6_s1/models/stage0 \
        --out experiments/mcq_letters/results/stage0_seed1.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from evaluation.mmbench import circular_rotations  # noqa: E402
from modeling_mage import MageForConditionalGeneration  # noqa: E402
from processing_mage import MageProcessor  # noqa: E402
from shapeworld import text as T  # noqa: E402
from shapeworld.benchmark_questions import MMBENCH_CATEGORIES, mmbench_item  # noqa: E402
from shapeworld.world import get_difficulty, item_rng, sample_scene  # noqa: E402


def letter_scorer(model, processor):
    """`score(text) -> the greedy first answer token (str)` for a text-only user turn."""
    tok = processor.tokenizer

    def score(text: str) -> str:
        messages = [{"role": "user", "content": [{"type": "text", "text": text}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        p_ids = tok(prompt)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p_ids])).logits[0, -1]
        return tok.decode([int(logits.argmax())]).strip()

    return score


def train_choice_items(n: int, seed: int, d) -> list[dict]:
    items = []
    for i in range(n):
        rng = item_rng(seed, "mcq-letters-train-choice", i)
        scene = sample_scene(rng, d, f"mcq-{i}")
        question, answer, _ = T.QUESTION_TYPES["choice"](rng, scene, d)
        items.append({"scene": scene, "rotations": [(question, answer)]})
    return items


def mmbench_items(n: int, seed: int, d, category: str) -> list[dict]:
    items = []
    for i in range(n):
        rng = item_rng(seed, f"mcq-letters-{category}", i)
        item = mmbench_item(rng, d, f"mcq-{category}-{i}", category, slot=i % 4)
        options = dict(zip("ABCD", item["options"]))
        rotations = [
            (f"{item['question']}\n{T.options_block(list(shown.values()))}{T.LLAVA_LETTER_SUFFIX}", letter)
            for shown, letter in circular_rotations(options, item["answer"])
        ]
        items.append({"scene": item["scene"], "rotations": rotations})
    return items


def letter_sets(n: int, seed: int) -> dict[str, list[dict]]:
    """`train_choice` (n questions) and `mmbench/<category>` (n // 4 questions each, four rotations), on easy scenes."""
    d = get_difficulty("easy")
    sets = {"train_choice": train_choice_items(n, seed, d)}
    for category in MMBENCH_CATEGORIES:
        sets[f"mmbench/{category}"] = mmbench_items(n // 4, seed, d, category)
    return sets


def score_sets(score, sets: dict[str, list[dict]], context) -> dict[str, dict]:
    """Per set: accuracy over rows, circular accuracy over questions, and the letters answered; `context(item,
    question, letter)` is the text put in front of each question."""
    results = {}
    for name, items in sets.items():
        rows = right = circular = 0
        letters = Counter()
        for item in items:
            hits = []
            for question, letter in item["rotations"]:
                predicted = score(context(item, question, letter) + question)
                letters[predicted] += 1
                hits.append(predicted == letter)
            rows, right, circular = rows + len(hits), right + sum(hits), circular + all(hits)
        results[name] = {
            "accuracy": round(right / rows, 4),
            "circular": round(circular / len(items), 4),
            "questions": len(items),
            "rows": rows,
            "predicted": dict(letters.most_common()),
        }
        print(name, results[name], flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="a MAGE checkpoint (asked without an image)")
    p.add_argument("--n", type=int, default=400, help="questions per set")
    p.add_argument("--seed", type=int, default=999, help="the items' seed")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)

    model = MageForConditionalGeneration.from_pretrained(args.model).eval()
    processor = MageProcessor.from_pretrained(args.model)
    score = letter_scorer(model, processor)
    sets = letter_sets(args.n, args.seed)
    results = {}
    for tag, context in (
        ("caption", lambda item, question, letter: f"In the picture: {T.caption(item['scene'])}.\n"),
        ("no_context", lambda item, question, letter: ""),
    ):
        results |= {f"{tag}/{name}": r for name, r in score_sets(score, sets, context).items()}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"model": str(args.model), "n": args.n, "commit": commit, "results": results}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
