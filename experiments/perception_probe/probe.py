"""What a demo checkpoint's image tokens hold about each object: linear probes for the colour and the shape of the
object in each grid cell, read from (a) the cell's pixels, (b) the vision tower's penultimate layer at the cell's
patch (CLS dropped, as the model uses it), (c) the projector's image token for the cell (IAN at Q = 9 on the 3 × 3
grid: token i is cell i, row-major; any other token count is skipped). Held-out accuracy per attribute; chance is
1/5 for colour and 1/3 for shape. Beside each, the share of the raw features' variance between the attribute's
classes (on the held-out cells with an object).

    python experiments/perception_probe/probe.py --model /tmp/demo_r5_s1/models/stage2 \
        --out experiments/perception_probe/results/r5_seed1_stage2.json

Fresh scenes of the demo's world (easy, 48 px; `item_rng(seed, "probe-<split>", i)`), 3,000 to fit and 1,000 to
score; a probe is multinomial logistic regression on standardised features (AdamW, full batch), fitted once per
feature source and attribute.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import torch
import torch.nn.functional as F
from geometry import variance_share

from modeling_mage import MageForConditionalGeneration
from processing_mage import MageProcessor
from shapeworld.world import GRID, get_difficulty, item_rng, render_scene, sample_scene

ROOT = Path(__file__).resolve().parents[2]


def scenes(n: int, seed: int, split: str, difficulty: str = "easy") -> list[dict]:
    d = get_difficulty(difficulty)
    return [sample_scene(item_rng(seed, f"probe-{split}", i), d, f"probe-{split}-{i}") for i in range(n)]


@torch.no_grad()
def features(model, processor, batch: list[dict], image_size: int) -> dict[str, torch.Tensor]:
    """`{source: (n_scenes, GRID*GRID, dim)}` for pixels, tower and (when one token per cell) projector."""
    images = [render_scene(s, image_size) for s in batch]
    pixel_values = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    n, c, h, w = pixel_values.shape
    p = h // GRID
    pixels = pixel_values.reshape(n, c, GRID, p, GRID, p).permute(0, 2, 4, 1, 3, 5).reshape(n, GRID * GRID, -1)
    layer = model.config.vision_feature_layer
    hidden = model.vision_tower(pixel_values, output_hidden_states=True).hidden_states[layer][:, 1:]
    out = {"pixels": pixels}
    if hidden.shape[1] == GRID * GRID:
        out["tower"] = hidden
    tokens = model.get_image_features(pixel_values, return_dict=True).pooler_output  # (n, Q, D)
    if tokens.shape[1] == GRID * GRID:
        out["projector"] = tokens
    return out


def cell_labels(batch: list[dict], attribute: str, classes: list[str]) -> torch.Tensor:
    """(n_scenes, GRID*GRID) class index of each cell's object, -1 for an empty cell."""
    labels = torch.full((len(batch), GRID * GRID), -1, dtype=torch.long)
    for i, scene in enumerate(batch):
        for obj in scene["objects"]:
            labels[i, obj["row"] * GRID + obj["col"]] = classes.index(obj[attribute])
    return labels


def fit_probe(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, steps: int) -> float:
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, x_test = (x - mean) / std, (x_test - mean) / std
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(probe(x), y).backward()
        opt.step()
    with torch.no_grad():
        return round((probe(x_test).argmax(-1) == y_test).float().mean().item(), 4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fit", type=int, default=3000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--seed", type=int, default=12345, help="the probe scenes' seed (not the demo's)")
    p.add_argument("--steps", type=int, default=500)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = MageForConditionalGeneration.from_pretrained(args.model).eval()
    processor = MageProcessor.from_pretrained(args.model)
    image_size = model.config.vision_config.image_size
    d = get_difficulty("easy")
    classes = {"colour": list(d.colours), "shape": list(d.shapes)}
    data = {}
    for split, n in (("fit", args.fit), ("test", args.test)):
        batch = scenes(n, args.seed, split)
        feats = [features(model, processor, batch[i : i + 100], image_size) for i in range(0, n, 100)]
        data[split] = (
            {k: torch.cat([f[k] for f in feats]).flatten(0, 1) for k in feats[0]},
            {a: cell_labels(batch, a, c).flatten() for a, c in classes.items()},
        )
    result = {
        "model": str(args.model),
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "scenes": {"fit": args.fit, "test": args.test, "seed": args.seed},
        "accuracy": {},
        "variance_share": {},
    }
    (fx, fy), (tx, ty) = data["fit"], data["test"]
    for source in fx:
        for attribute in classes:
            keep, keep_test = fy[attribute] >= 0, ty[attribute] >= 0
            result["accuracy"].setdefault(source, {})[attribute] = fit_probe(
                fx[source][keep], fy[attribute][keep], tx[source][keep_test], ty[attribute][keep_test], args.steps
            )
            result["variance_share"].setdefault(source, {})[attribute] = variance_share(
                tx[source][keep_test], ty[attribute][keep_test]
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["accuracy"]), json.dumps(result["variance_share"]))


if __name__ == "__main__":
    main()
