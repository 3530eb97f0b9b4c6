"""Generate the embedded ShapeWorld data set: LLaVA-format stage 1/2/3 data and MME/POPE/MMBench/SEED splits.

Examples:
  mage data shapeworld --out data/shapeworld --train 20000 --eval 500 --seed 0
  mage data shapeworld --out /tmp/sw --train 2000 --eval 200 --image-size 64 --difficulty easy
  mage data shapeworld --out /tmp/sw --train 100 --eval 50 --max-objects 6 --distractors 4 --benchmarks mme pope

Re-running with the same arguments rewrites byte-identical files (manifest.json lists their SHA-256).
"""

from __future__ import annotations

import argparse
import sys

from .benchmarks import BENCHMARKS
from .dataset import generate_dataset
from .world import ShapeWorldError, get_difficulty

DATASETS = ("shapeworld",)
_KNOBS = (
    "min_objects",
    "max_objects",
    "num_colours",
    "num_shapes",
    "label_prob",
    "distractors",
    "jitter",
    "question_types",
    "short_suffix_rate",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("dataset", choices=DATASETS, help="which data set to generate")
    parser.add_argument("--out", required=True, help="output folder (new, empty, or a previous ShapeWorld folder)")
    parser.add_argument("--train", type=int, required=True, help="training scenes (one stage-1 + one stage-2 row each)")
    parser.add_argument("--eval", type=int, required=True, help="held-out scenes and items per benchmark")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0); same seed -> same bytes")
    parser.add_argument("--image-size", type=int, default=336, help="image side in pixels (default 336, CLIP-336)")
    parser.add_argument("--difficulty", default="default", help="preset: easy, default or hard (knobs below override)")
    parser.add_argument("--tools-train", type=int, default=None, help="stage-3 training dialogues (default --train)")
    parser.add_argument("--tools-eval", type=int, default=None, help="held-out stage-3 dialogues (default --eval)")
    parser.add_argument(
        "--benchmarks",
        nargs="+",
        default=None,
        metavar="NAME",
        help="benchmarks to write: mme pope mmbench seed (default all)",
    )
    knobs = parser.add_argument_group("difficulty knobs")
    knobs.add_argument("--min-objects", type=int, help="fewest objects per scene (1-6)")
    knobs.add_argument("--max-objects", type=int, help="most objects per scene (1-6)")
    knobs.add_argument("--num-colours", type=int, help="colours in use (2-6)")
    knobs.add_argument("--num-shapes", type=int, help="shapes in use (2-6)")
    knobs.add_argument("--label-prob", type=float, help="chance of a written word in a scene (0-1)")
    knobs.add_argument("--distractors", type=int, help="neutral background marks per scene (never mentioned)")
    knobs.add_argument("--jitter", type=float, help="position jitter inside a cell (0-0.2 of a cell)")
    knobs.add_argument(
        "--short-suffix-rate", type=float, help="share of short questions with LLaVA's short-answer suffix (0-1)"
    )
    knobs.add_argument(
        "--question-types",
        nargs="+",
        metavar="TYPE",
        help="stage-2 question types to use (default all): count count_shape count_colour colour shape "
        "position existence relation side ocr more removed detail choice",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        difficulty = get_difficulty(args.difficulty)
        overrides = {k: getattr(args, k) for k in _KNOBS if getattr(args, k, None) is not None}
        if overrides:
            difficulty = get_difficulty({**difficulty.to_dict(), **overrides})
        manifest = generate_dataset(
            args.out,
            n_train=args.train,
            n_eval=args.eval,
            seed=args.seed,
            image_size=args.image_size,
            difficulty=difficulty,
            n_tools_train=args.tools_train,
            n_tools_eval=args.tools_eval,
            benchmarks=args.benchmarks or BENCHMARKS,
            progress=not args.no_progress,
        )
    except ShapeWorldError as error:
        print(f"mage data shapeworld: {error}", file=sys.stderr)
        return 2
    counts = manifest["counts"]
    print(
        f"wrote {args.out}: {counts['train_scenes']} train scenes, {counts['eval_scenes']} eval scenes, "
        f"{counts['stage3_train_rows']}+{counts['stage3_eval_rows']} tool dialogues, benchmark questions "
        f"{counts['benchmark_questions']}; manifest.json lists {len(manifest['files'])} files and "
        f"{len(manifest['image_folders'])} image folders"
    )
    return 0
