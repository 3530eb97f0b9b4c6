"""Shared by the perception studies (`probe.py`, `existence_errors.py`, `../demo_ladder/ladder.py`): the kind of an
existence question's object in its scene, and the share of a feature set's variance that lies between classes."""

from __future__ import annotations

import torch

KINDS = ("present", "cross", "colour-only", "shape-only", "neither")


def existence_kind(question: str, scene: dict) -> str:
    """For "Is there a(n) <colour> <shape> in the image?": present; absent with its colour and its shape both on other
    objects ("cross": only a bag of attributes says yes); absent sharing only its colour, only its shape, or neither."""
    words = question.rstrip("?").split()
    colour, shape = words[-5], words[-4]
    objects = [(o["colour"], o["shape"]) for o in scene["objects"]]
    if (colour, shape) in objects:
        return "present"
    has_colour = any(c == colour for c, _ in objects)
    has_shape = any(s == shape for _, s in objects)
    return {(True, True): "cross", (True, False): "colour-only", (False, True): "shape-only"}.get(
        (has_colour, has_shape), "neither"
    )


def variance_share(x: torch.Tensor, y: torch.Tensor) -> float:
    """The share of the features' total variance (raw, not standardised: the geometry the LM sees) that lies between
    the classes' means; `x (n, dim)`, `y (n,)` class indices."""
    mean = x.mean(0)
    between = sum((y == c).sum() * (x[y == c].mean(0) - mean).pow(2).sum() for c in y.unique())
    return round(float(between / (x - mean).pow(2).sum()), 4)
