"""Can the demo's stage-0 LM answer the held-out skills from a caption in its context, without any image?

The demo's stage 0 trains the tiny LM (128 wide, 2 layers) on text, including each conversation with its scene's
caption in front ("In the picture: a red circle at the top left and …"). If that LM cannot answer existence against
near negatives (an absent "red circle" beside a present red square and blue circle) from the caption's words, the
binding of a colour to a shape is a limit of the LM, not of what the image tokens carry. Scored as the ladder scores:
the held-out skill sets (`shapeworld.skills`, 400 per skill), teacher-forced argmax of every answer token, with the
caption in context and without it (the answer prior).

    python experiments/demo_ladder/text_binding.py --stage0 experiments/demo_ladder/cache/demo_stage0_seed0/models/stage0 \
        --out experiments/demo_ladder/text_binding_results/text_binding_seed0.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from modeling_mage import MageForConditionalGeneration  # noqa: E402
from processing_mage import MageProcessor  # noqa: E402
from shapeworld import text as T  # noqa: E402
from shapeworld.skills import SKILLS, skill_items  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage0", type=Path, required=True, help="a MAGE checkpoint (the demo's stage 0)")
    p.add_argument("--n", type=int, default=400, help="questions per skill")
    p.add_argument("--seed", type=int, default=999, help="the held-out items' seed")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)

    model = MageForConditionalGeneration.from_pretrained(args.stage0).eval()
    processor = MageProcessor.from_pretrained(args.stage0)
    tok = processor.tokenizer
    results = {}
    for context in (True, False):
        for skill in SKILLS:
            correct = 0
            items = skill_items(skill, args.n, args.seed)
            for item in items:
                text = (f"In the picture: {T.caption(item['scene'])}.\n" if context else "") + item["question"]
                messages = [{"role": "user", "content": [{"type": "text", "text": text}]}]
                prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
                whole = processor.apply_chat_template(
                    messages + [{"role": "assistant", "content": [{"type": "text", "text": item["answer"]}]}]
                )
                p_ids = tok(prompt)["input_ids"]
                w_ids = tok(whole)["input_ids"]
                assert w_ids[: len(p_ids)] == p_ids, (prompt, whole)
                answer = w_ids[len(p_ids) :]
                while answer and answer[-1] == tok.eos_token_id:  # the answer's words, without the turn's end
                    answer = answer[:-1]
                with torch.no_grad():
                    pred = model(input_ids=torch.tensor([w_ids])).logits.argmax(-1)[0]  # text only, no image
                start = len(p_ids) - 1
                correct += int(pred[start : start + len(answer)].tolist() == answer)
            key = f"{'caption' if context else 'no_context'}/{skill}"
            results[key] = round(correct / len(items), 4)
            print(key, results[key], flush=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"stage0": str(args.stage0), "n": args.n, "commit": commit, "accuracy": results}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
