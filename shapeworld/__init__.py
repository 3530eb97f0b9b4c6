"""ShapeWorld: the embedded, generated data set that lets every stage of MAGE run, learn and be evaluated offline.

>>> from shapeworld import generate_dataset, dataset_paths, iter_samples, text_corpus
>>> sample = next(iter_samples("train", 1, seed=0, image_size=64))
>>> sample["image"].size, sample["conversations"][0]["value"].startswith("<image>")
((64, 64), True)

Details and format decisions: docs/shapeworld.md.
"""

from .benchmarks import benchmark_items, write_mmbench, write_mme, write_pope, write_seed
from .corpus import text_corpus
from .dataset import (
    dataset_paths,
    generate_dataset,
    iter_samples,
    write_benchmarks,
    write_llava_split,
    write_tool_dialogues,
)
from .text import caption, caption_row, instruction_row, instruction_turns
from .tools import tool_dialogue
from .world import (
    COLOURS,
    DIFFICULTIES,
    LABEL_WORDS,
    POSITIONS,
    SHAPES,
    Difficulty,
    ShapeWorldError,
    get_difficulty,
    item_rng,
    png_bytes,
    render_scene,
    sample_scene,
    scene_png,
)

__all__ = [
    "COLOURS",
    "DIFFICULTIES",
    "LABEL_WORDS",
    "POSITIONS",
    "SHAPES",
    "Difficulty",
    "ShapeWorldError",
    "benchmark_items",
    "caption",
    "caption_row",
    "dataset_paths",
    "generate_dataset",
    "iter_samples",
    "tool_dialogue",
    "write_benchmarks",
    "write_llava_split",
    "write_mmbench",
    "write_mme",
    "write_pope",
    "write_seed",
    "write_tool_dialogues",
    "get_difficulty",
    "instruction_row",
    "instruction_turns",
    "item_rng",
    "png_bytes",
    "render_scene",
    "sample_scene",
    "scene_png",
    "text_corpus",
]
