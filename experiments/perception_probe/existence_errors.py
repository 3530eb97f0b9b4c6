"""Where a demo checkpoint's existence answers go wrong: the held-out existence questions split by what the scene
holds of the asked object (present; absent with its colour and its shape both present on other objects — "cross",
only a bag of attributes says yes —; absent sharing only its colour, only its shape, or neither), each with its
accuracy and the share answered "yes" (greedy, the demo's prompt, as the report scores it).

    python experiments/perception_probe/existence_errors.py --demo-dir /tmp/demo_r5_s1 --seed 1 --stage stage2 \
        --out experiments/perception_probe/existence_errors_results/r5_seed1_stage2.json

The scenes are regenerated from the demo's seed (`shapeworld.skills.skill_items`) and checked against the written
`skills.jsonl` row by row (question and answer), so a mismatch stops the script instead of mislabelling.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
from pathlib import Path

import torch
from geometry import KINDS, existence_kind

from evaluation.runner import generate_batch
from evaluation.skills import first_word, read_skill_set
from modeling_mage import MageForConditionalGeneration
from processing_mage import MageProcessor
from shapeworld.skills import skill_items

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-dir", type=Path, required=True)
    p.add_argument("--seed", type=int, required=True, help="the demo's --seed (its skill sets are a function of it)")
    p.add_argument("--stage", default="stage2")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    skills = args.demo_dir / "data" / "eval" / "skills" / "skills.jsonl"
    records = [r for r in read_skill_set(skills) if r.subtask == "existence"]
    items = skill_items("existence", len(records), args.seed)
    for record, item in zip(records, items):
        if (record.question, record.answer) != (item["question"], item["answer"]):
            raise SystemExit(f"{skills}: {record.question!r} is not the regenerated {item['question']!r} (seed?)")
    model_path = args.demo_dir / "models" / args.stage
    model = MageForConditionalGeneration.from_pretrained(model_path).eval()
    processor = MageProcessor.from_pretrained(model_path)
    words = []
    for begin in range(0, len(records), 32):
        words += [first_word(a) for a in generate_batch(model, processor, records[begin : begin + 32], 4)[0]]
    right, yes, total = collections.Counter(), collections.Counter(), collections.Counter()
    for record, item, word in zip(records, items, words):
        k = existence_kind(item["question"], item["scene"])
        total[k] += 1
        right[k] += word == record.answer.lower()
        yes[k] += word == "yes"
    result = {
        "model": str(model_path),
        "seed": args.seed,
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "accuracy": round(sum(right.values()) / len(records), 4),
        "by_kind": {
            k: {
                "questions": total[k],
                "accuracy": round(right[k] / total[k], 4),
                "yes_rate": round(yes[k] / total[k], 4),
            }
            for k in KINDS
            if total[k]
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["by_kind"]), result["accuracy"])


if __name__ == "__main__":
    main()
