"""The data pipeline's rate: JPEG decoding, processing, tokenisation, masking and collation through a DataLoader."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from benchmarks.flops import Shapes
from benchmarks.perf.settings import RunSettings, torch_module


def build_pipeline_dataset(s: Shapes, folder: Path, queries: int, rows: int = 64):
    """LLaVA-format stage-2 data on disk (640×480 JPEG photos-like images, one or two turns) read through the
    project's own `LlavaDataset` (vicuna_v1 template, masking) with a 224-px CLIP image processor."""
    import numpy as np
    from PIL import Image
    from transformers import CLIPImageProcessor

    from mage_testing.tiny import train_tokenizer
    from processing_mage import MageProcessor
    from training.data import build_dataset

    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    questions = [
        "What is the man holding in his left hand?",
        "Describe the scene in detail.",
        "How many people are visible, and what are they doing?",
    ]
    answers = [
        "He is holding a red umbrella while crossing the street in the rain.",
        "A busy market with stalls of fruit, people walking and a bicycle leaning on a wall.",
        "Three people: two are talking near the door and one is reading a newspaper.",
    ]
    data = []
    for index in range(rows):
        pixels = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        pixels[::2] = pixels[::2] // 2  # some structure so JPEG is not pure noise
        Image.fromarray(pixels).save(folder / "images" / f"{index:04d}.jpg", quality=90)
        turns = [
            {"from": "human", "value": "<image>\n" + questions[index % 3]},
            {"from": "gpt", "value": answers[index % 3]},
        ]
        if index % 2:
            turns += [
                {"from": "human", "value": questions[(index + 1) % 3]},
                {"from": "gpt", "value": answers[(index + 1) % 3]},
            ]
        data.append({"id": f"row{index}", "image": f"{index:04d}.jpg", "conversations": turns})
    path = folder / "data.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    tokenizer = train_tokenizer(questions + answers, vocab_size=400)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": s.image_size}, crop_size={"height": s.image_size, "width": s.image_size}
    )
    processor = MageProcessor(image_processor, tokenizer, num_image_tokens=queries)
    return build_dataset(path, processor, "vicuna_v1", max_length=s.max_positions, image_folder=folder / "images")


def measure_data_pipeline(s: Shapes, settings: RunSettings, step_rates: dict, log, rows: int = 64) -> dict:
    """Samples/s of image decoding + processing + tokenisation + masking + collation through a `DataLoader`
    with 0 and 2 workers, next to the training step rates."""
    torch = torch_module()
    from training.collator import MageDataCollator

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        dataset = build_pipeline_dataset(s, Path(tmp), s.queries[0], rows)
        collator = MageDataCollator.from_processor(dataset.processor)
        for workers in (0, 2):
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_size=s.batch_size,
                collate_fn=collator,
                num_workers=workers,
                persistent_workers=False,
                shuffle=False,
            )
            start = time.perf_counter()
            iterator = iter(loader)
            first = next(iterator)  # worker start-up is excluded from the rate
            ready = time.perf_counter()
            count = 0
            for batch in iterator:
                count += int(batch["input_ids"].shape[0])
            elapsed = time.perf_counter() - ready
            results[f"workers{workers}"] = {
                "samples_per_s": count / elapsed if elapsed > 0 else float("inf"),
                "startup_s": ready - start,
                "batch_keys": sorted(first),
            }
    for label, rate in step_rates.items():
        results.setdefault("vs_stage2_step_rate", {})[label] = {
            f"workers{w}": results[f"workers{w}"]["samples_per_s"] / rate for w in (0, 2)
        }
    log(
        "  data pipeline: "
        + ", ".join(f"{k} {v['samples_per_s']:.1f} samples/s" for k, v in results.items() if k.startswith("workers"))
    )
    return results
