"""What a demo checkpoint answers on the held-out skill set: per skill, its accuracy and its most common answers next
to the true ones (greedy, LLaVA's short-answer prompt, as the demo's report scores them).

    python experiments/demo_regime/probe_answers.py --model /tmp/demo_new_s0/models/stage2 \
        --skills /tmp/demo_new_s0/data/eval/skills/skills.jsonl --per-skill 160 [--no-suffix]
"""

from __future__ import annotations

import argparse
import collections
import json

import torch

from evaluation import prompts
from evaluation.runner import generate_batch
from evaluation.skills import first_word, read_skill_set
from modeling_mage import MageForConditionalGeneration
from processing_mage import MageProcessor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--skills", required=True, help="a skills.jsonl (shapeworld.skills.write_skill_sets)")
    parser.add_argument("--per-skill", type=int, default=160)
    parser.add_argument(
        "--no-suffix",
        action="store_true",
        help="ask the bare question, without LLaVA's 'Answer the question using a single word or phrase.'",
    )
    args = parser.parse_args()
    if args.no_suffix:  # the training rows carry the suffix on half the short questions
        prompts._BUILDERS["pope"] = lambda record: record.question
    torch.set_num_threads(1)
    model = MageForConditionalGeneration.from_pretrained(args.model).eval()
    processor = MageProcessor.from_pretrained(args.model)
    records = read_skill_set(args.skills)
    report = {}
    for skill in dict.fromkeys(r.subtask for r in records):
        chosen = [r for r in records if r.subtask == skill][: args.per_skill]
        answers = []
        for begin in range(0, len(chosen), 32):
            answers += generate_batch(model, processor, chosen[begin : begin + 32], 4)[0]
        words = [first_word(a) for a in answers]
        report[skill] = {
            "questions": len(chosen),
            "accuracy": round(sum(w == r.answer.lower() for w, r in zip(words, chosen)) / len(chosen), 4),
            "answers": collections.Counter(words).most_common(6),
            "truth": collections.Counter(r.answer.lower() for r in chosen).most_common(6),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
