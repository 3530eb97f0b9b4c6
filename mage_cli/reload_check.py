"""Load a saved MAGE folder exactly as a Hub user would: a fresh Python process, the Auto classes, remote code.

The check runs in a subprocess whose working directory is outside the repository and which imports nothing of this
project, so the checkpoint's own copied code is what runs (in a process that has imported the project, transformers
would hand back the in-process classes instead; docs/DECISIONS.md, "Reload check").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch, transformers
    from PIL import Image
    request = json.loads(sys.argv[1])
    auto_name = "AutoModelForImageTextToText" if hasattr(transformers, "AutoModelForImageTextToText") else None
    if request.get("auto_class"):
        auto_name = request["auto_class"]
    model = getattr(transformers, auto_name).from_pretrained(request["path"], trust_remote_code=True).eval()
    processor = transformers.AutoProcessor.from_pretrained(request["path"], trust_remote_code=True)
    processor.tokenizer.padding_side = "left"
    images = [Image.open(path).convert("RGB") for path in request["images"]]
    prompts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
            add_generation_prompt=True,
        )
        for question in request["questions"]
    ]
    inputs = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=request["max_new_tokens"], do_sample=False)
    answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    print("RESULT" + json.dumps({
        "transformers": transformers.__version__,
        "auto_class": auto_name,
        "model_class": type(model).__module__ + "." + type(model).__name__,
        "project_imported": any(m in sys.modules for m in ("modeling_mage", "processing_mage")),
        "answers": [a.strip() for a in answers],
    }))
    """
)


def draw_check_image(path: str | os.PathLike) -> Path:
    """A 64×64 test scene (a red circle left of a blue square) for load checks; returns its path."""
    image = Image.new("RGB", (64, 64), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    draw.ellipse([6, 20, 26, 40], fill=(220, 30, 30))
    draw.rectangle([38, 20, 58, 40], fill=(30, 60, 220))
    image.save(path)
    return Path(path)


def reload_and_answer(
    checkpoint: str | os.PathLike,
    image_paths: list[str],
    questions: list[str],
    max_new_tokens: int = 16,
    python: str | None = None,
    auto_class: str | None = None,
    timeout: float = 600,
) -> dict:
    """Answer `questions` about `image_paths` with the checkpoint loaded in a fresh process; returns its report.

    Raises `RuntimeError` with the subprocess's error output when the folder does not load.
    """
    request = {
        "path": str(Path(checkpoint).resolve()),
        "images": [str(Path(p).resolve()) for p in image_paths],
        "questions": list(questions),
        "max_new_tokens": max_new_tokens,
        "auto_class": auto_class,
    }
    with tempfile.TemporaryDirectory(prefix="mage-reload-") as workdir:
        script = Path(workdir) / "reload.py"
        script.write_text(_SCRIPT)
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(Path(workdir) / "modules"))
        completed = subprocess.run(
            [python or sys.executable, str(script), json.dumps(request)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if completed.returncode != 0:
        raise RuntimeError(f"{checkpoint} did not load in a fresh process:\n{completed.stderr[-3000:]}")
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


__all__ = ["reload_and_answer", "draw_check_image"]
