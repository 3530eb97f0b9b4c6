"""How the demo's training rows differ from the ladder's: objects per scene in each, and checks that the demo's rows
are right (every existence answer matches its scene, every caption is its scene's caption, sampled PNGs equal their
scene's rendering). Prints one JSON.

    python experiments/demo_ladder/scene_stats.py --demo-data experiments/demo_ladder/cache/demo_stage0_seed0/data
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))

import ladder  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from shapeworld import text as T  # noqa: E402
from shapeworld.world import render_scene  # noqa: E402

EXISTENCE = re.compile(r"^<image>\nIs there an? (\w+) (\w+) in the image\?")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-data", type=Path, required=True, help="a demo data folder (demo_stage0.py's data/)")
    p.add_argument("--ladder-rows", type=int, default=4000, help="ladder training rows to draw (seed 1000)")
    p.add_argument("--images", type=int, default=300, help="demo PNGs compared with their scene's rendering")
    args = p.parse_args()
    train = args.demo_data / "train"
    scenes = {}
    for line in (train / "scenes.jsonl").read_text().splitlines():
        record = json.loads(line)
        scenes[record["image"]] = record["scene"]
    demo_counts = collections.Counter(len(s["objects"]) for s in scenes.values())
    ladder_rows, _, _ = ladder.make_project_dataset(
        args.ladder_rows, 1000, 48, ["exist", "colour", "count", "position"]
    )
    ladder_counts = collections.Counter(e["caption"].count(" and ") + 1 for e in ladder_rows)

    existence = wrong = 0
    for row in json.loads((train / "stage2_instructions.json").read_text()):
        match = EXISTENCE.match(row["conversations"][0]["value"])
        if match:
            existence += 1
            colour, shape = match.groups()
            present = any(o["colour"] == colour and o["shape"] == shape for o in scenes[row["image"]]["objects"])
            wrong += present != (row["conversations"][1]["value"] == "Yes")
    captions = json.loads((train / "stage1_captions.json").read_text())
    caption_mismatch = sum(T.caption(scenes[r["image"]]) != r["conversations"][1]["value"] for r in captions)
    sample = random.Random(0).sample(sorted(scenes), min(args.images, len(scenes)))
    pixel_diff = max(
        int(
            np.abs(
                np.asarray(Image.open(train / name).convert("RGB"), dtype=np.int16)
                - np.asarray(render_scene(scenes[name], 48), dtype=np.int16)
            ).max()
        )
        for name in sample
    )

    def shares(counts: collections.Counter) -> dict:
        total = sum(counts.values())
        return {str(k): round(counts[k] / total, 3) for k in sorted(counts)}

    print(
        json.dumps(
            {
                "objects_per_scene": {"demo": shares(demo_counts), "ladder": shares(ladder_counts)},
                "demo_existence_rows": existence,
                "demo_existence_wrong_answers": wrong,
                "demo_caption_mismatches": caption_mismatch,
                "demo_png_max_abs_diff": pixel_diff,
                "demo_pngs_checked": len(sample),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
