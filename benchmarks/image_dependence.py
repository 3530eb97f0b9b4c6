"""Does a MAGE checkpoint use its images? Loss of held-out instruction rows with their own, grey and shuffled images,
and how much the projector output varies across images (a collapsed IAN emits nearly one vector for all images).

    python -m benchmarks.image_dependence --model runs/stage2 --data data/eval/stage2_instructions.json [--rows 96]
"""

from __future__ import annotations

import argparse
import json


def measure(model_path: str, data: str, rows: int = 96) -> dict:
    import torch

    from modeling_mage import MageForConditionalGeneration
    from processing_mage import MageProcessor
    from training.collator import MageDataCollator
    from training.data import build_dataset

    processor = MageProcessor.from_pretrained(model_path)
    model = MageForConditionalGeneration.from_pretrained(model_path).eval()
    dataset = build_dataset(data, processor, "vicuna_v1", 256)
    batch = MageDataCollator.from_processor(processor)([dataset[i] for i in range(min(rows, len(dataset)))])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "labels")}
    pixels = inputs["pixel_values"]
    with torch.no_grad():
        losses = {
            "real": model(**inputs).loss.item(),
            "grey": model(**{**inputs, "pixel_values": torch.zeros_like(pixels)}).loss.item(),
            "shuffled": model(**{**inputs, "pixel_values": pixels.roll(1, 0)}).loss.item(),
        }
        features = model.get_image_features(pixels[:16], return_dict=True).pooler_output
    across = features.std(0).mean().item()
    rms = features.pow(2).mean().sqrt().item()
    return {
        "model": model_path,
        "rows": len(batch["input_ids"]),
        "loss": losses,
        "projector_std_across_images": across,
        "projector_std_within_image": features.std(1).mean().item(),
        "projector_rms": rms,
        # the image-dependent share of the tokens, comparable across output scales (a LayerNorm pins RMS to 1)
        "projector_std_across_images_over_rms": across / rms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, nargs="+")
    parser.add_argument("--data", required=True)
    parser.add_argument("--rows", type=int, default=96)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    for path in args.model:
        print(json.dumps(measure(path, args.data, args.rows)))


if __name__ == "__main__":
    main()
