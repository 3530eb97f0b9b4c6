"""Does stage 0 teach the LM to answer a multiple-choice question with the right letter, given more such rows?

Trains the demo's stage-0 text LM (`mage_cli.demo_stages.train_text_lm`, the demo's rows for `--seed`) from the demo's
untrained checkpoint, with `--choice-rows` extra multiple-choice conversations that carry their scene's caption in
context (their own stream, `item_rng(seed, "stage0-choice", i)`), for `--lm-steps` updates, then scores it with
`letter_binding.py`'s sets. `--only-choice` trains on the extra rows alone (is the skill learnable at all?);
`--direct` states the answer's words in context as well, so only the letter lookup is left to learn.

    python experiments/mcq_letters/stage0_letters.py --untrained /tmp/demo_r6_s1/models/untrained --seed 1 \
        --choice-rows 20000 --lm-steps 1200 --work /tmp/mcq_b --out experiments/mcq_letters/results/choice20k_s1.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from letter_binding import letter_scorer, letter_sets, score_sets  # noqa: E402

from mage_cli.demo_stages import DemoSettings, stage0_text_rows, train_text_lm  # noqa: E402
from modeling_mage import MageForConditionalGeneration  # noqa: E402
from processing_mage import MageProcessor  # noqa: E402
from shapeworld import text as T  # noqa: E402
from shapeworld.world import item_rng, sample_scene  # noqa: E402


def option_text(question: str, letter: str) -> str:
    """The text of option `letter` in a question's options block ("B. red" → "red")."""
    return next(line[3:] for line in question.split("\n") if line.startswith(f"{letter}. "))


def context(scene: dict, question: str, letter: str, direct: bool) -> str:
    """The text in front of the question: the scene's caption, and with `direct` the answer's words as well."""
    told = f"The answer is {option_text(question, letter)}.\n" if direct else ""
    return f"In the picture: {T.caption(scene)}.\n{told}"


def choice_rows(n: int, seed: int, d, direct: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        rng = item_rng(seed, "stage0-choice", i)
        scene = sample_scene(rng, d, f"stage0-choice-{i:06d}")
        question, answer, _ = T.QUESTION_TYPES["choice"](rng, scene, d)
        turns = T.conversation([(context(scene, question, answer, direct) + question, answer)], with_image=False)
        rows.append({"id": f"choice-{i:06d}", "conversations": turns})
    return rows


def evaluate(model_dir: Path, n: int, direct: bool = False) -> dict:
    model = MageForConditionalGeneration.from_pretrained(model_dir).eval()
    score = letter_scorer(model, MageProcessor.from_pretrained(model_dir))
    scored = score_sets(
        score, letter_sets(n, 999), lambda item, question, letter: context(item["scene"], question, letter, direct)
    )
    return {f"caption/{name}": result for name, result in scored.items()}


def loss_logs(lm: Path) -> dict:
    """The first and last logged training loss (with their update) from the trained LM's `training_report.json`."""
    report = json.loads((lm / "training_report.json").read_text())
    return {k: {"step": report[k]["step"], "loss": round(report[k]["loss"], 4)} for k in ("first_log", "last_log")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--untrained", type=Path, required=True, help="the demo's untrained checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--choice-rows", type=int, default=0)
    p.add_argument("--lm-steps", type=int, default=1200)
    p.add_argument("--only-choice", action="store_true")
    p.add_argument(
        "--direct",
        action="store_true",
        help="the extra rows and the evaluation also state the answer's words ('The answer is red.'): the letter "
        "lookup alone, without reading the caption",
    )
    p.add_argument("--n", type=int, default=200, help="evaluation questions per set")
    p.add_argument("--work", type=Path, required=True, help="a scratch folder (replaced)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)

    settings = dataclasses.replace(DemoSettings(), lm_steps=args.lm_steps)
    d = settings.world()
    rows = [] if args.only_choice else stage0_text_rows(settings, args.seed)
    rows += choice_rows(args.choice_rows, args.seed, d, args.direct)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    text = args.work / "stage0_text.json"
    text.write_text(json.dumps(rows))
    start = time.time()
    lm = train_text_lm(args.untrained, {"stage0_text": str(text)}, args.work / "lm", settings, args.seed, "cpu")
    seconds = time.time() - start
    results = evaluate(lm, args.n, args.direct)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": len(rows),
        "train_seconds": round(seconds, 1),
        "loss": loss_logs(lm),
        "commit": commit,
        "results": results,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
