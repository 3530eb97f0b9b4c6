"""A saved checkpoint loads with trust_remote_code in a fresh process that never imports this project.

transformers 5.x: AutoModelForImageTextToText + AutoProcessor + pipeline("image-text-to-text").
transformers 4.57: AutoModelForVision2Seq + AutoProcessor + pipeline, in the virtualenv named by MAGE_TF4_PYTHON
(created by .ci/run). On both, `apply_chat_template(tokenize=True)` gives the processor's own inputs.
Both must give the logits of the in-process model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch, transformers
    from PIL import Image, ImageDraw
    path, auto_name, with_pipeline = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    model = getattr(transformers, auto_name).from_pretrained(path, trust_remote_code=True).eval()
    processor = transformers.AutoProcessor.from_pretrained(path, trust_remote_code=True)
    image = Image.new("RGB", (64, 64), (120, 120, 120))
    ImageDraw.Draw(image).rectangle([8, 8, 30, 30], fill=(220, 20, 20))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    image_messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What is it?"}]}]
    templated = processor.apply_chat_template(
        image_messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    result = {
        "version": transformers.__version__,
        "model_module": type(model).__module__,
        "processor_module": type(processor).__module__,
        "project_imported": any(name in sys.modules for name in ("modeling_mage", "processing_mage")),
        "input_keys": sorted(inputs.keys()),
        "logits": logits[0].tolist(),
        "generated": generated[0].tolist(),
        "templated_equal": all(torch.equal(templated[k], inputs[k]) for k in inputs),
    }
    if with_pipeline:
        pipe = transformers.pipeline("image-text-to-text", model=path, trust_remote_code=True)
        out = pipe(images=image, text=prompt, max_new_tokens=3, return_full_text=False)
        result["pipeline_text_type"] = type(out[0]["generated_text"]).__name__
    print("RESULT" + json.dumps(result))
    """
)


def _run_fresh(python: str, checkpoint, auto_name: str, tmp_path, with_pipeline: bool) -> dict:
    script = tmp_path / "load_checkpoint.py"
    script.write_text(LOAD_SCRIPT)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH",)}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    completed = subprocess.run(
        [python, str(script), str(checkpoint), auto_name, "1" if with_pipeline else "0"],
        cwd=tmp_path,  # outside the repository
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def _reference(tiny_mage):
    model, processor = tiny_mage
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), (120, 120, 120))
    ImageDraw.Draw(image).rectangle([8, 8, 30, 30], fill=(220, 20, 20))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    inputs = processor(images=[image], text=[processor.apply_chat_template(messages, add_generation_prompt=True)])
    with torch.no_grad():
        return model(**inputs).logits[0], model.generate(**inputs, max_new_tokens=5, do_sample=False)[0].tolist()


def _check(result, tiny_mage):
    logits, generated = _reference(tiny_mage)
    assert result["model_module"].startswith("transformers_modules."), result["model_module"]
    assert result["processor_module"].startswith("transformers_modules."), result["processor_module"]
    assert not result["project_imported"]
    assert result["input_keys"] == ["attention_mask", "input_ids", "pixel_values"]
    torch.testing.assert_close(torch.tensor(result["logits"]), logits, rtol=1e-5, atol=1e-5)
    assert result["generated"] == generated
    assert result["templated_equal"], "apply_chat_template(tokenize=True) must give the processor's own inputs"


@pytest.mark.slow
def test_fresh_process_loads_remote_code_on_this_transformers(tiny_mage, tiny_mage_dir, tmp_path):
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        result = _run_fresh(sys.executable, tiny_mage_dir, "AutoModelForImageTextToText", tmp_path, with_pipeline=True)
        assert result["pipeline_text_type"] == "str"
    else:
        result = _run_fresh(sys.executable, tiny_mage_dir, "AutoModelForVision2Seq", tmp_path, with_pipeline=True)
    _check(result, tiny_mage)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MAGE_TF4_PYTHON"), reason="MAGE_TF4_PYTHON (a transformers 4.57 venv) not set")
def test_transformers_4_57_loads_the_checkpoint_through_vision2seq(tiny_mage, tiny_mage_dir, tmp_path):
    result = _run_fresh(os.environ["MAGE_TF4_PYTHON"], tiny_mage_dir, "AutoModelForVision2Seq", tmp_path, True)
    assert result["version"].startswith("4.57")
    assert result["pipeline_text_type"] == "str"
    _check(result, tiny_mage)


def test_every_remote_code_file_is_shipped_and_imported_by_the_modeling_file(tiny_mage_dir):
    """The siblings the remote code imports are all in `REMOTE_CODE_FILES`, written by `save_pretrained`, and imported
    by `modeling_mage.py` itself: transformers 4.57 copies only the modeling file's direct relative imports."""
    import ast
    from pathlib import Path

    from modeling_mage import modeling_mage

    folder = Path(modeling_mage.__file__).parent

    def relative_imports(name: str) -> set[str]:
        tree = ast.parse((folder / name).read_text(encoding="utf-8"))
        return {f"{n.module}.py" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}

    shipped = set(modeling_mage.REMOTE_CODE_FILES)
    assert set().union(*map(relative_imports, shipped)) <= shipped
    assert relative_imports("modeling_mage.py") == shipped - {"modeling_mage.py"}
    assert shipped <= {path.name for path in tiny_mage_dir.iterdir()}
