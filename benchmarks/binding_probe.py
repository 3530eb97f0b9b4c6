"""Do the image tokens still say which colour goes with which shape? A linear probe, trained on the train scenes and
scored on the held-out ones, predicts for every (colour, shape) pair whether the scene holds it, from the frozen
tower's patch features, the VAB output (IAN only) and the projector output. A projector that averages the image
keeps which colours and which shapes are present but loses the pairs, which POPE-style questions ask about.

    python -m benchmarks.binding_probe --model runs/stage1 [runs/stage2 …] --data mage-demo/data [--scenes 3000]

Prints one JSON line per model: balanced accuracy (mean of the hit rate on present and absent pairs) per layer.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path


def _scenes(folder: Path, limit: int) -> list[dict]:
    """The first `limit` `{"image": absolute path, "scene": …}` entries of the split's `scenes.jsonl`."""
    from alignment.recipe import read_scenes

    scenes = [{"image": path, "scene": scene} for path, scene in itertools.islice(read_scenes([folder]).items(), limit)]
    if not scenes:
        raise FileNotFoundError(
            f"no scenes in {folder / 'scenes.jsonl'}: the probe needs ShapeWorld splits with their scenes"
        )
    return scenes


def _pair_labels(scenes: list[dict], pairs: list[tuple[str, str]]):
    import torch

    labels = torch.zeros(len(scenes), len(pairs))
    index = {pair: i for i, pair in enumerate(pairs)}
    for row, scene in enumerate(scenes):
        for obj in scene["scene"]["objects"]:
            labels[row, index[(obj["colour"], obj["shape"])]] = 1.0
    return labels


def _layer_outputs(model, processor, scenes: list[dict], batch_size: int = 128) -> dict:
    import torch
    from PIL import Image

    outputs: dict[str, list] = {"tower": [], "vab": [], "projector": []}
    projector = model.model.multi_modal_projector
    with torch.no_grad():
        for start in range(0, len(scenes), batch_size):
            images = [Image.open(s["image"]).convert("RGB") for s in scenes[start : start + batch_size]]
            pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
            features = model.model.select_vision_features(pixels)
            outputs["tower"].append(features)
            if hasattr(projector, "vab"):
                outputs["vab"].append(projector.vab(features))
            outputs["projector"].append(model.model.get_image_features(pixels, return_dict=True).pooler_output)
    return {name: torch.cat(parts).flatten(1) for name, parts in outputs.items() if parts}


def _probe(train_x, train_y, test_x, test_y, steps: int, seed: int) -> float:
    import torch

    mean, std = train_x.mean(0), train_x.std(0) + 1e-5
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    generator = torch.Generator().manual_seed(seed)
    probe = torch.nn.Linear(train_x.shape[1], train_y.shape[1])
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=1e-2)
    for _ in range(steps):
        rows = torch.randint(0, len(train_x), (128,), generator=generator)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(probe(train_x[rows]), train_y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = probe(test_x) > 0
    present, absent = test_y == 1, test_y == 0
    return 0.5 * (predicted[present].float().mean().item() + (~predicted[absent]).float().mean().item())


def measure(model_path: str, data: str, scenes: int = 3000, steps: int = 1500, seed: int = 0) -> dict:
    import torch

    from modeling_mage import MageForConditionalGeneration
    from processing_mage import MageProcessor

    torch.manual_seed(seed)
    model = MageForConditionalGeneration.from_pretrained(model_path).eval()
    processor = MageProcessor.from_pretrained(model_path)
    train_scenes, test_scenes = _scenes(Path(data) / "train", scenes), _scenes(Path(data) / "eval", scenes)
    objects = [o for s in train_scenes for o in s["scene"]["objects"]]
    pairs = list(itertools.product(sorted({o["colour"] for o in objects}), sorted({o["shape"] for o in objects})))
    train_y, test_y = _pair_labels(train_scenes, pairs), _pair_labels(test_scenes, pairs)
    train_x = _layer_outputs(model, processor, train_scenes)
    test_x = _layer_outputs(model, processor, test_scenes)
    balanced = {name: _probe(train_x[name], train_y, test_x[name], test_y, steps, seed) for name in train_x}
    return {
        "model": model_path,
        "train_scenes": len(train_scenes),
        "test_scenes": len(test_scenes),
        "pairs": len(pairs),
        "balanced_accuracy": {name: round(value, 3) for name, value in balanced.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, nargs="+")
    parser.add_argument("--data", required=True, help="a ShapeWorld folder with train/ and eval/ scenes.jsonl")
    parser.add_argument("--scenes", type=int, default=3000, help="at most this many scenes per split")
    parser.add_argument("--steps", type=int, default=1500, help="probe optimizer steps")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    for path in args.model:
        print(json.dumps(measure(path, args.data, args.scenes, args.steps)))


if __name__ == "__main__":
    main()
