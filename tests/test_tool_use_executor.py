"""Executor and registry: tiny local transformers pipelines from random configs, function tools, ordering,
reference passing, concurrency, time-out, failure of a middle step, path confinement, artefacts and manifest."""

import json
import threading
import time

import pytest
from PIL import Image

from tool_use.executor import execute_plan
from tool_use.media import PathNotAllowedError, confine, load_audio
from tool_use.registry import ToolRegistry, pick_pipeline_task, pipeline_tool, registry_from_config
from tool_use.schema import TaskSpec


def step(i, task, args, dep=None):
    refs = sorted(
        {int(v.rsplit("-", 1)[1]) for v in args.values() if isinstance(v, str) and v.startswith("<GENERATED>")}
    )
    return {"task": task, "id": i, "dep": dep if dep is not None else (refs or [-1]), "args": args}


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(d / "input.png")
    (tmp_path / "secret.png").write_bytes((d / "input.png").read_bytes())
    return d


@pytest.fixture
def registry():
    reg = ToolRegistry()
    calls = []

    @reg.tool("image-classification")
    def classify(image):
        calls.append("classify")
        r, g, b = image.getpixel((0, 0))
        return "red" if r > max(g, b) else "other"

    @reg.tool("translation")
    def translate(text):
        calls.append("translate")
        return {"red": "rouge"}.get(text, text)

    @reg.tool("summarization")
    def summarize(text):
        calls.append("summarize")
        return text[:3]

    @reg.tool("text-to-image")
    def draw(text):
        calls.append("draw")
        return Image.new("RGB", (8, 8), (0, 0, 255) if "blue" in text else (0, 255, 0))

    @reg.tool("text-to-speech")
    def speak(text):
        import numpy as np

        return {"array": np.linspace(-0.5, 0.5, 160, dtype=np.float32), "sampling_rate": 16000}

    reg.calls = calls
    return reg


def test_order_reference_passing_artefacts_and_manifest(tmp_path, inputs, registry):
    plan = [
        step(0, "image-classification", {"image": "input.png"}),
        step(1, "translation", {"text": "<GENERATED>-0"}),
        step(2, "text-to-image", {"text": "a blue square"}),
        step(3, "image-classification", {"image": "<GENERATED>-2"}),
        step(4, "text-to-speech", {"text": "<GENERATED>-1"}),
    ]
    out = tmp_path / "out"
    result = execute_plan(plan, registry, input_dir=inputs, output_dir=out, request="what colour?")
    assert result.status == "ok", result.summary()
    assert [s.output for s in result.steps[:2]] == ["red", "rouge"]
    assert result.steps[3].output == "other"  # the generated blue image reached step 3
    assert registry.calls.index("classify") < registry.calls.index("translate")
    assert (out / "step1_translation.txt").read_text() == "rouge"
    assert Image.open(out / "step2_text-to-image.png").getpixel((0, 0)) == (0, 0, 255)
    audio = load_audio(out / "step4_text-to-speech.wav")
    assert audio["sampling_rate"] == 16000 and audio["array"].shape == (160,)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["request"] == "what colour?" and manifest["status"] == "ok" and manifest["plan"] == plan
    assert [s["status"] for s in manifest["steps"]] == ["ok"] * 5
    assert manifest["steps"][1]["output_text"] == "rouge"
    assert "step 1 translation: ok -> 'rouge'" in result.summary()


def test_failure_of_a_middle_step_keeps_independent_steps(tmp_path, inputs, registry):
    @registry.tool("translation")
    def broken(text):
        raise RuntimeError("model exploded")

    plan = [
        step(0, "image-classification", {"image": "input.png"}),
        step(1, "translation", {"text": "<GENERATED>-0"}),
        step(2, "summarization", {"text": "<GENERATED>-1"}),
        step(3, "summarization", {"text": "<GENERATED>-0"}),
    ]
    result = execute_plan(plan, registry, input_dir=inputs, output_dir=tmp_path / "o")
    assert result.status == "partial"
    assert [s.status for s in result.steps] == ["ok", "failed", "skipped", "ok"]
    assert result.steps[1].error == "RuntimeError: model exploded"
    assert result.steps[2].error == "depends on step 1 (failed)"
    assert result.steps[3].output == "red"
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["steps"][1]["error"] == "RuntimeError: model exploded"


def test_timeout_abandons_the_step_and_runs_the_rest(tmp_path, registry):
    release = threading.Event()

    @registry.tool("summarization")
    def slow(text):
        release.wait(5)
        return "late"

    plan = [
        step(0, "summarization", {"text": "long"}),
        step(1, "translation", {"text": "<GENERATED>-0"}),
        step(2, "translation", {"text": "red"}),
    ]
    t0 = time.perf_counter()
    result = execute_plan(plan, registry, output_dir=tmp_path, step_timeout=0.3)
    release.set()
    assert time.perf_counter() - t0 < 3
    assert [s.status for s in result.steps] == ["timeout", "skipped", "ok"]
    assert "no result within 0.3 s" in result.steps[0].error
    assert result.steps[2].output == "rouge"


def test_independent_steps_run_concurrently(tmp_path):
    reg = ToolRegistry()
    barrier = threading.Barrier(2, timeout=1)

    @reg.tool("summarization")
    def meet(text):
        barrier.wait()  # only returns if the other step is running at the same time
        return text

    plan = [step(0, "summarization", {"text": "a"}), step(1, "summarization", {"text": "b"})]
    assert execute_plan(plan, reg, output_dir=tmp_path, max_workers=2).status == "ok"
    barrier.reset()
    serial = execute_plan(plan, reg, output_dir=tmp_path, max_workers=1, step_timeout=10)
    assert [s.status for s in serial.steps] == ["failed", "failed"]  # BrokenBarrierError: never concurrent


@pytest.mark.parametrize("name", ["../secret.png", "/etc/passwd.png", "sub/../../secret.png"])
def test_path_confinement(tmp_path, inputs, registry, name):
    plan = [step(0, "image-classification", {"image": name}), step(1, "translation", {"text": "red"})]
    result = execute_plan(plan, registry, input_dir=inputs, output_dir=tmp_path / "o")
    assert result.steps[0].status == "failed"
    assert "PathNotAllowedError" in result.steps[0].error and "outside the allowed directories" in result.steps[0].error
    assert result.steps[1].status == "ok"
    assert "classify" not in registry.calls


def test_symlink_out_of_the_input_dir_is_refused(tmp_path, inputs):
    (inputs / "link.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(PathNotAllowedError):
        confine("link.png", [inputs])
    assert confine("input.png", [inputs]) == (inputs / "input.png").resolve()
    with pytest.raises(FileNotFoundError, match="not found in the allowed directories"):
        confine("missing.png", [inputs])


def test_invalid_and_oversized_plans_are_not_run(tmp_path, registry):
    bad = [step(0, "paint", {"text": "x"})]
    result = execute_plan(bad, registry, output_dir=tmp_path)
    assert result.status == "invalid" and [e.code for e in result.errors] == ["unknown_task"]
    assert registry.calls == []
    # a task the default schema knows but this registry lacks is unknown too
    result = execute_plan([step(0, "object-detection", {"image": "x.png"})], registry, output_dir=tmp_path)
    assert [e.code for e in result.errors] == ["unknown_task"]
    long = [step(i, "translation", {"text": "red"}) for i in range(5)]
    result = execute_plan(long, registry, output_dir=tmp_path, max_steps=4)
    assert [e.code for e in result.errors] == ["too_many_steps"] and registry.calls == []
    assert json.loads((tmp_path / "manifest.json").read_text())["errors"][0]["code"] == "too_many_steps"


def test_wrong_output_type_is_a_step_failure(tmp_path):
    reg = ToolRegistry()
    reg.register("text-to-image", lambda text: "not an image")
    result = execute_plan([step(0, "text-to-image", {"text": "x"})], reg, output_dir=tmp_path)
    assert result.steps[0].status == "failed" and "expected a PIL image" in result.steps[0].error


def test_plans_are_data_nothing_is_evaluated(tmp_path, registry):
    payload = "__import__('os').system('touch HACKED')"
    result = execute_plan([step(0, "translation", {"text": payload})], registry, output_dir=tmp_path)
    assert result.steps[0].output == payload
    assert not (tmp_path / "HACKED").exists()


def test_register_needs_modalities_for_new_tasks():
    reg = ToolRegistry()
    with pytest.raises(ValueError, match="inputs= and output= are required"):
        reg.register("shout", lambda text: text)
    reg.register("shout", lambda text: text.upper(), inputs={"text": "text"}, output="text")
    assert reg.tasks["shout"].inputs == {"text": "text"} and reg.run("shout", text="a") == "A"
    with pytest.raises(KeyError, match="registered: \\['shout'\\]"):
        reg["nope"]


# ------------------------------------------------------------------ tiny transformers pipelines from random configs
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        LlamaConfig,
        LlamaForCausalLM,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
    )

    from mage_testing.tiny import train_tokenizer

    root = tmp_path_factory.mktemp("tiny_pipelines")
    torch.manual_seed(0)
    tok = train_tokenizer(["the red circle is left of the blue square", "summarize this text please"], vocab_size=80)
    labels = {"id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}
    bert = BertForSequenceClassification(
        BertConfig(
            vocab_size=len(tok),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            **labels,
        )
    )
    bert.save_pretrained(root / "cls")
    tok.save_pretrained(root / "cls")
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=32,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    )
    llama.save_pretrained(root / "lm")
    tok.save_pretrained(root / "lm")
    vit_labels = {"id2label": {0: "circle", 1: "square"}, "label2id": {"circle": 0, "square": 1}}
    vit = ViTForImageClassification(
        ViTConfig(
            image_size=32,
            patch_size=16,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            **vit_labels,
        )
    )
    vit.save_pretrained(root / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "vit")
    return root


def test_pipeline_tools_on_tiny_random_models(tmp_path, inputs, tiny_models):
    reg = ToolRegistry()
    reg.add(
        pipeline_tool(
            "sentiment",
            str(tiny_models / "cls"),
            pipeline_task="text-classification",
            spec=TaskSpec("sentiment", {"text": "text"}, "text"),
        )
    )
    reg.add(pipeline_tool("summarization", str(tiny_models / "lm"), generate_kwargs={"max_new_tokens": 4}))
    reg.add(pipeline_tool("image-classification", str(tiny_models / "vit")))
    plan = [
        step(0, "image-classification", {"image": "input.png"}),
        step(1, "summarization", {"text": "<GENERATED>-0"}),
        step(2, "sentiment", {"text": "<GENERATED>-1"}),
    ]
    result = execute_plan(plan, reg, input_dir=inputs, output_dir=tmp_path)
    assert result.status == "ok", result.summary()
    assert result.steps[0].output in ("circle", "square")
    assert isinstance(result.steps[1].output, str)
    assert result.steps[2].output in ("NEGATIVE", "POSITIVE")


def test_registry_from_yaml(tmp_path, tiny_models):
    cfg = tmp_path / "tools.yaml"
    cfg.write_text(
        f"tools:\n  image-classification: {{model: {tiny_models / 'vit'}}}\n"
        f"  summarization: {{model: {tiny_models / 'lm'}, generate_kwargs: {{max_new_tokens: 2}}}}\n"
        f"  sentiment: {{model: {tiny_models / 'cls'}, pipeline: text-classification, inputs: {{text: text}}, output: text}}\n"
    )
    reg = registry_from_config(cfg)
    assert sorted(reg.tasks) == ["image-classification", "sentiment", "summarization"]
    assert reg.run("sentiment", text="the red circle") in ("NEGATIVE", "POSITIVE")
    with pytest.raises(ValueError, match="unknown key"):
        registry_from_config({"tool": {}})
    with pytest.raises(ValueError, match="needs a `model:`"):
        registry_from_config({"tools": {"summarization": {"pipeline": "summarization"}}})


def test_pick_pipeline_task_names_what_this_transformers_has():
    assert pick_pipeline_task("image-classification") == "image-classification"
    assert pick_pipeline_task("summarization") in ("summarization", "text-generation")
    assert pick_pipeline_task("text-to-speech") == "text-to-audio"
    with pytest.raises(ValueError, match="no transformers pipeline serves"):
        pick_pipeline_task("text-to-image")


def test_wider_schema_runs_what_is_configured(tmp_path, registry):
    from tool_use.schema import DEFAULT_TASKS

    plan = [
        step(0, "object-detection", {"image": "x.png"}),
        step(1, "summarization", {"text": "<GENERATED>-0"}),
        step(2, "translation", {"text": "red"}),
    ]
    result = execute_plan(plan, registry, output_dir=tmp_path, tasks=DEFAULT_TASKS)
    assert [s.status for s in result.steps] == ["failed", "skipped", "ok"]
    assert result.steps[0].error.startswith("no tool configured for 'object-detection'")


def test_artefact_names_stay_in_the_output_dir(tmp_path):
    reg = ToolRegistry()
    reg.register("../../evil", lambda text: text, inputs={"text": "text"}, output="text")
    result = execute_plan([step(0, "../../evil", {"text": "x"})], reg, output_dir=tmp_path / "o")
    assert result.status == "ok"
    assert result.steps[0].output_path == str(tmp_path / "o" / "step0_.._.._evil.txt")
