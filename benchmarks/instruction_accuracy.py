"""Exact-match accuracy of a MAGE checkpoint on held-out ShapeWorld instruction turns, by question type (first two
words of the question), greedy, first turn of each row.

    python -m benchmarks.instruction_accuracy --model runs/stage2 --data data/eval/stage2_instructions.json [--rows 120]

`--caption-in-context` asks the same questions without the image, the scene's caption in front of them ("In the
picture: …", as in the demo's stage-0 text): how well a text-only LM answers from its context.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
from pathlib import Path


def measure(
    model_path: str, data: str, rows: int = 120, batch_size: int = 24, caption_in_context: bool = False
) -> dict[str, list[int]]:
    import torch
    from PIL import Image

    from modeling_mage import MageForConditionalGeneration
    from processing_mage import MageProcessor

    model = MageForConditionalGeneration.from_pretrained(model_path).eval()
    processor = MageProcessor.from_pretrained(model_path)
    processor.tokenizer.padding_side = "left"
    folder = Path(data).parent
    items = json.loads(Path(data).read_text())[:rows]
    captions = _scene_captions(folder) if caption_in_context else {}
    missing = [
        row.get("id", index) for index, row in enumerate(items) if caption_in_context and row["image"] not in captions
    ]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(items)} rows of {data} have no scene in {folder / 'scenes.jsonl'} "
            f"(e.g. row {missing[0]!r}): --caption-in-context reads the caption from the split's scenes"
        )
    stats: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        questions = [row["conversations"][0]["value"].replace("<image>\n", "") for row in batch]
        if caption_in_context:
            contents = [
                [{"type": "text", "text": f"In the picture: {captions[row['image']]}.\n{q}"}]
                for row, q in zip(batch, questions)
            ]
            images = None
        else:
            contents = [[{"type": "image"}, {"type": "text", "text": q}] for q in questions]
            images = [Image.open(folder / row["image"]).convert("RGB") for row in batch]
        prompts = [
            processor.apply_chat_template([{"role": "user", "content": c}], add_generation_prompt=True)
            for c in contents
        ]
        inputs = processor(images=images, text=prompts, padding=True, return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for row, question, answer in zip(batch, questions, answers):
            key = " ".join(question.split()[:2])
            stats[key][0] += answer.strip() == row["conversations"][1]["value"]
            stats[key][1] += 1
    return dict(stats)


def _scene_captions(folder: Path) -> dict[str, str]:
    """Image path (as the instruction rows name it, relative to `folder`) → the caption of its scene in the split's
    `scenes.jsonl`."""
    from alignment.recipe import read_scenes
    from shapeworld import caption

    return {os.path.relpath(path, folder): caption(scene) for path, scene in read_scenes([folder]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--rows", type=int, default=120)
    parser.add_argument("--caption-in-context", action="store_true", help="no image: the caption in the prompt")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    stats = measure(args.model, args.data, args.rows, caption_in_context=args.caption_in_context)
    for key, (correct, total) in sorted(stats.items(), key=lambda kv: -kv[1][1]):
        print(f"{key:<24} {correct:>4}/{total:<4}")


if __name__ == "__main__":
    main()
