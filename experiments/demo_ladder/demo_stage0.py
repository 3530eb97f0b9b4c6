"""The demo's stage 0 alone, for the ladder: `mage demo`'s own data, tiny model, text-LM pretraining (through
`mage train`'s path on the text-only rows with in-context copies) and CLIP-style tower pretraining, combined into one
checkpoint — the demo's functions, in the demo's order, run one after the other in this process (one thread).

    python experiments/demo_ladder/demo_stage0.py --seed 0 --out experiments/demo_ladder/cache/demo_stage0_seed0

`ladder.py --stage0-from <out>/models/stage0` then runs the ladder's S1 + S2 from it (its own data and evaluation).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

import torch  # noqa: E402

from mage_cli.demo_stages import (  # noqa: E402
    DemoSettings,
    build_model,
    combine_stage0,
    generate_demo_data,
    pretrain_tower,
    train_text_lm,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a DemoSettings field, as `mage demo --set` (the caches under cache/ were made before stage 0 read tool "
        "dialogues: --set stage0_tool_share=0 remakes them)",
    )
    p.add_argument(
        "--model-override",
        dest="model_overrides",
        action="append",
        default=[],
        metavar="KEY=INT",
        help="a size of the tiny model (`mage_testing.tiny.tiny_config`'s arguments, e.g. text_layers=4), which --set "
        "cannot reach (DemoSettings.model_overrides is a dict)",
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    if (args.out / "models" / "stage0" / "model.safetensors").is_file():
        print(args.out / "models" / "stage0", "exists")
        return
    t0 = time.time()
    settings = DemoSettings().with_overrides(args.overrides)
    sizes = {}
    for pair in args.model_overrides:
        key, _, value = pair.partition("=")
        if not value.strip().isdigit():
            raise SystemExit(f"--model-override {pair!r}: expected KEY=INT")
        sizes[key.strip()] = int(value)
    settings = dataclasses.replace(settings, model_overrides={**settings.model_overrides, **sizes})
    models = args.out / "models"
    paths = generate_demo_data(settings, args.out / "data", args.seed)
    init = build_model(settings, args.seed, models / "untrained")
    report, tower = pretrain_tower(init, paths, settings, args.seed, models / "stage0-tower")
    lm = train_text_lm(init, paths, models / "stage0-lm", settings, args.seed, "cpu")
    combine_stage0(lm, tower, models / "stage0")
    summary = {
        "seed": args.seed,
        "settings": dataclasses.asdict(settings),
        "tower": {"steps": report.steps, "retrieval_top1_after": report.retrieval_top1_after},
        "seconds": round(time.time() - t0, 1),
    }
    (args.out / "stage0.json").write_text(json.dumps(summary))
    print(summary)


if __name__ == "__main__":
    main()
