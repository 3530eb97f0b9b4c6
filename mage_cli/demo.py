"""The main job, offline: build a tiny MAGE, answer questions about a generated image, save it with remote code,
reload it in a fresh process through the Auto classes and check both answer alike.

    mage demo                       # everything under ./mage-demo
    mage demo --output-dir /tmp/x --seed 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

QUESTIONS = ["What is in the image?", "Which colour is the circle?"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", type=Path, default=Path("mage-demo"), help="where everything is written")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model weights (runs are deterministic)")
    parser.add_argument("--quick", action="store_true", help="the shortest run (used by the tests)")
    parser.add_argument("--max-new-tokens", type=int, default=12)


class _Steps:
    """A plain progress display: one numbered line per step with its duration."""

    def __init__(self, total: int):
        self.total, self.index, self.started = total, 0, time.perf_counter()

    def __call__(self, title: str):
        self.index += 1
        print(f"[{self.index}/{self.total}] {title} …", flush=True)
        self.step_started = time.perf_counter()

    def done(self, detail: str = "") -> None:
        print(f"      done in {time.perf_counter() - self.step_started:.1f}s {detail}".rstrip(), flush=True)


def draw_demo_image(path: Path) -> Path:
    """A 64×64 scene: a red circle at the left, a blue square at the right."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    draw.ellipse([6, 20, 26, 40], fill=(220, 30, 30))
    draw.rectangle([38, 20, 58, 40], fill=(30, 60, 220))
    image.save(path)
    return path


def _answer(model, processor, image_paths: list[Path], questions: list[str], max_new_tokens: int) -> list[str]:
    import torch
    from PIL import Image

    processor.tokenizer.padding_side = "left"
    images = [Image.open(p).convert("RGB") for p in image_paths]
    prompts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}], add_generation_prompt=True
        )
        for q in questions
    ]
    inputs = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return [a.strip() for a in answers]


def run(args: argparse.Namespace) -> int:
    from mage_cli.reload_check import reload_and_answer
    from mage_cli.tiny import build_tiny_mage

    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    steps = _Steps(total=4)

    steps("generate a scene and build a tiny random MAGE (tiny CLIP + tiny Llama, tokenizer trained here)")
    image_path = draw_demo_image(out / "scene.png")
    model, processor = build_tiny_mage(seed=args.seed)
    parameters = sum(p.numel() for p in model.parameters())
    steps.done(f"({parameters / 1e6:.2f} M parameters, {model.config.num_query_tokens} IAN query tokens)")

    steps("answer questions in this process (batched, left padding, greedy)")
    in_process = _answer(model, processor, [image_path] * len(QUESTIONS), QUESTIONS, args.max_new_tokens)
    steps.done()

    steps("save the checkpoint with remote code (safetensors) and the processor")
    checkpoint = out / "tiny-mage"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    steps.done(f"→ {checkpoint}")

    steps("reload it in a fresh process through the Auto classes with trust_remote_code=True")
    report = reload_and_answer(checkpoint, [image_path] * len(QUESTIONS), QUESTIONS, args.max_new_tokens)
    steps.done(f"({report['auto_class']} on transformers {report['transformers']}: {report['model_class']})")

    print("\nThe model is untrained (random weights): the answers are noise; what matters is that they agree.")
    print(f"{'question':<32} {'in process':<40} {'fresh process (remote code)':<40}")
    for question, mine, theirs in zip(QUESTIONS, in_process, report["answers"]):
        print(f"{question:<32} {mine[:38]!r:<40} {theirs[:38]!r:<40}")
    agree = in_process == report["answers"] and not report["project_imported"]
    print(f"\nin-process and reloaded answers agree: {agree}")
    print(f"total {time.perf_counter() - steps.started:.1f}s; outputs in {out.resolve()}")
    return 0 if agree else 1
