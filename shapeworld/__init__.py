"""ShapeWorld: the embedded, generated data set that lets every stage of MAGE run, learn and be evaluated offline."""

from .benchmarks import benchmark_items
from .text import caption, caption_row, instruction_row, instruction_turns, text_corpus
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
