"""Performance benchmark: the analytical FLOP model against torch's own FLOP counter, its element-wise traffic
against a dispatch trace of the real kernels, and a `--quick` run of
`python -m benchmarks.perf` at tiny shapes that goes through every measurement (training, profiler share, prefill,
dynamic vs static+compiled decode, data pipeline, memory and LoRA/QLoRA subprocesses) and writes the table + JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.flops import (
    SHAPES,
    ModelSpec,
    ian_flops,
    llava_projector_flops,
    lm_flops,
    predict,
    relative_error,
    train_step_flops,
    vision_tower_flops,
)

ROOT = Path(__file__).resolve().parent.parent


def _counted_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


@pytest.fixture(scope="module")
def tiny_pair():
    from benchmarks.perf.models import build_model
    from benchmarks.perf.settings import RunSettings

    shapes, settings = SHAPES["tiny"], RunSettings()
    models = [build_model(shapes, spec, settings) for spec in (ModelSpec("llava"), ModelSpec("ian", 4))]
    for model in models:  # eager attention is plain matmuls, which torch's counter sees (CPU flash SDPA it does not)
        model.set_attn_implementation("eager")
    return shapes, settings, *models


def test_flop_model_matches_torch_flop_counter_part_by_part(tiny_pair):
    """Tower, both projectors and the LM: the formulas equal what torch counts (the LM's attention is counted
    full by torch, causal-halved by the model: added back here)."""
    from benchmarks.perf.models import make_batch
    from benchmarks.perf.settings import RunSettings

    shapes, settings, llava, mage = tiny_pair
    pixels = torch.randn(1, 3, shapes.image_size, shapes.image_size)
    tower = _counted_flops(lambda: mage.model.vision_tower(pixels, output_hidden_states=True))
    assert tower == vision_tower_flops(shapes)

    features = mage.model.select_vision_features(pixels)
    assert _counted_flops(lambda: llava.model.multi_modal_projector(features)) == llava_projector_flops(shapes)
    counted_ian = _counted_flops(lambda: mage.model.multi_modal_projector(features, pixels))
    seb_sdpa = shapes.seb_layers * 4 * 4 * shapes.num_patches * shapes.lm_hidden  # F.sdpa in the SEB: not counted
    assert counted_ian == sum(ian_flops(shapes, 4).values()) - seb_sdpa

    batch = make_batch(shapes, ModelSpec("ian", 4), 2, 1, RunSettings(), prompt=True)
    tokens = batch["input_ids"].shape[1]
    embeds = mage.get_input_embeddings()(batch["input_ids"])
    counted_lm = _counted_flops(lambda: mage.lm_head(mage.model.language_model(inputs_embeds=embeds)[0]))
    causal_half = shapes.lm_layers * 2 * tokens * tokens * shapes.lm_hidden
    assert counted_lm == lm_flops(shapes, tokens) + causal_half


_NO_TRAFFIC = {  # views and allocations move no data; matmul-class kernels are in the FLOP part of the model
    "t",
    "view",
    "_unsafe_view",
    "transpose",
    "slice",
    "unsqueeze",
    "squeeze",
    "expand",
    "alias",
    "detach",
    "select",
    "unbind",
    "lift_fresh",
    "_local_scalar_dense",
    "as_strided",
    "permute",
    "_reshape_alias",
    "split",
    "empty",
    "empty_like",
    "new_empty_strided",
    "new_empty",
    "arange",
    "mm",
    "addmm",
    "bmm",
    "convolution",
    "convolution_backward",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention_for_cpu_backward",
}


def _counted_traffic(fn) -> int:
    """Elements read + written by every non-matmul kernel that `fn` dispatches (views excluded; a gather reads
    only the rows it selects; in-place ops write into an input)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class Traffic(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if name not in _NO_TRAFFIC:
                reads = sum(t.numel() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor))
                writes = sum(t.numel() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
                if name == "copy_":
                    reads -= args[0].numel()
                elif name.endswith("_"):
                    writes = 0
                if name == "embedding":
                    reads = writes
                if name == "nll_loss_forward":
                    reads = args[1].numel()
                Traffic.total += reads + writes
            return out

    with Traffic():
        fn()
    return Traffic.total


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize(
    "spec", [ModelSpec("llava"), ModelSpec("ian", 4), ModelSpec("ian", 16)], ids=["llava", "mage4", "mage16"]
)
def test_elementwise_traffic_matches_a_dispatch_trace(spec, stage):
    """The element-wise part of the model (norms, activations, RoPE, residual adds, copies, scatter, loss) moves as
    many elements as the kernels PyTorch really runs in a training forward + backward (SDPA, as benchmarked)."""
    import dataclasses

    from benchmarks.flops import Elementwise, train_step_elementwise
    from benchmarks.perf.models import build_model, make_batch, set_stage
    from benchmarks.perf.settings import RunSettings
    from benchmarks.perf.timing import loss_of

    shapes = dataclasses.replace(SHAPES["tiny"], batch_size=1)
    model = build_model(shapes, spec, RunSettings())
    set_stage(model, stage)
    model.train()
    batch = make_batch(shapes, spec, stage, 1, RunSettings())
    loss_of(model, batch).backward()  # warm-up (lazy initialisations)
    model.zero_grad(set_to_none=True)
    counted = _counted_traffic(lambda: loss_of(model, batch).backward())
    parts = train_step_elementwise(shapes, spec, stage)
    modelled = sum((v for k, v in parts.items() if k != "optimizer"), Elementwise()).traffic
    assert modelled == pytest.approx(counted, rel=0.06)
    flops = train_step_flops(shapes, spec, stage)
    assert flops["total"] == pytest.approx(flops["matmul"] + flops["elementwise"])
    assert flops["elementwise"] > 0


@pytest.mark.parametrize("name", ["small", "7b", "13b"])
def test_elementwise_flops_are_about_one_percent_of_the_matmuls_or_less(name):
    """As FLOPs, element-wise work hardly moves the predicted ratios (what it costs is memory traffic)."""
    shapes = SHAPES[name]
    for spec in [ModelSpec("llava")] + [ModelSpec("ian", q) for q in shapes.queries]:
        for stage in (1, 2):
            flops = train_step_flops(shapes, spec, stage)
            assert 0 < flops["elementwise"] < 0.015 * flops["matmul"]


def test_predicted_ratios_follow_the_token_counts():
    small = SHAPES["small"]
    assert small.num_patches == 256 and small.queries[0] == 64
    fewer, more = predict(small, 16), predict(small, 144)
    assert fewer.stage2_speedup > predict(small, 64).stage2_speedup > more.stage2_speedup > 1.0
    # ITDM's extra text forward costs something; stage 1 back-propagates through the frozen LM (2×), stage 2 trains it.
    assert predict(small, 64).stage2_speedup_without_itdm > predict(small, 64).stage2_speedup
    llava2, llava1 = train_step_flops(small, ModelSpec("llava"), 2), train_step_flops(small, ModelSpec("llava"), 1)
    assert llava2["lm"] / lm_flops(small, 256 + small.stage2_text_tokens) == pytest.approx(3.0)
    assert llava1["lm"] / lm_flops(small, 256 + small.stage1_text_tokens) == pytest.approx(2.0)
    seven = predict(SHAPES["7b"], 144)
    assert 1.5 < seven.stage2_speedup < 3.0 and seven.kv_cache_ratio == pytest.approx(
        (144 + 64 + 128) / (576 + 64 + 128)
    )
    assert relative_error(1.1, 1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="stage"):
        train_step_flops(small, ModelSpec("llava"), 3)


@pytest.mark.slow
def test_quick_run_writes_every_measurement(tmp_path):
    output = tmp_path / "perf_tiny.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [
        sys.executable,
        "-m",
        "benchmarks.perf",
        "--shapes",
        "tiny",
        "--device",
        "cpu",
        "--quick",
        "--compile-backend",
        "eager",
        "--threads",
        "1",
        "--output",
        str(output),
    ]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(output.read_text())

    labels = ["LLaVA-16", "MAGE-4", "MAGE-16", "MAGE-4-noITDM"]
    for stage in ("stage1", "stage2"):
        assert list(results["training"][stage]) == labels
        for row in results["training"][stage].values():
            assert row["samples_per_s"] > 0 and row["tokens_per_s"] > row["samples_per_s"]
            assert len(row["all_s"]) == results["settings"]["repeats"]
    assert results["training"]["stage2"]["LLaVA-16"]["tokens_per_sample"] == 1 + 16 + 7
    assert results["training"]["stage2"]["MAGE-4"]["tokens_per_sample"] == 1 + 4 + 7
    assert results["ratios"]["stage2_speedup"]["LLaVA-16"] == pytest.approx(1.0)

    share = results["projector_share"]["MAGE-4"]
    assert 0 < share["share"] < 1 and 0 < share["forward_share_profiler"] < 1
    assert 0 < share["forward_s"] < share["step_s"] and 0 < share["backward_s"] < share["step_s"]
    assert {"vision_tower", "projector", "language_model", "ian.vab", "ian.query_cnn", "ian.seb_layer0"} == set(
        share["profiler_forward_s"]
    )
    assert share["top_ops"]
    assert all(v["latency_ms"] > 0 for v in results["prefill"].values())
    for bs in ("bs1", "bs2"):
        assert set(results["decode"][bs]) == {"LLaVA-16", "MAGE-4"}
        for label in ("LLaVA-16", "MAGE-4"):
            row = results["decode"][bs][label]
            assert row["eager_dynamic"]["generated"] == row["static_compiled"]["generated"] == 4
            assert row["static_compiled"]["tokens_per_s"] > 0
    pipeline = results["data_pipeline"]
    assert pipeline["workers0"]["samples_per_s"] > 0 and pipeline["workers2"]["samples_per_s"] > 0
    assert {"input_ids", "labels", "attention_mask", "pixel_values"} <= set(pipeline["workers0"]["batch_keys"])

    memory = results["memory"]
    for label in ("LLaVA-16", "MAGE-4"):
        assert "error" not in memory[label], memory[label]
        assert memory[label]["stage2_peak_rss_mib"] > 0 and memory[label]["stage1_step_delta_mib"] >= 0
    lora = results["lora"]["MAGE-4"]
    assert "error" not in lora.get("qlora", {}), lora
    assert lora["lora"]["trainable_params"] > 0 and lora["qlora"]["step_s_median"] > 0
    assert lora["qlora"]["weights_rss_mib"] >= 0

    assert {"MAGE-4", "MAGE-16"} == set(results["model_vs_measured"])
    assert any("stage-2" in name for name in results["targets"])
    assert {row["shapes"] for row in results["predictions_paper_shapes"]} == {"7b", "13b"}
    for key in ("cpu_model", "cpu_count", "date_utc", "versions"):
        assert results["environment"][key]
    assert results["environment"]["allocator"] == "retain"
    assert results["output"]["json"] == str(output.resolve())
    assert results["machine"]["gemm_flop_per_s"] > 0 and results["machine"]["bandwidth_bytes_per_s"] > 0
    assert all("minor_faults_per_step" in row for row in results["training"]["stage2"].values())
    assert "time_model" in results["model_vs_measured"]["MAGE-4"]["stage2_speedup"]
    assert {"gemm", "attention", "other"} <= set(share["profiler_self_s_by_class"])

    table = output.with_suffix(".md").read_text()
    for needle in (
        "| stage2 samples/s |",
        "×)",
        "prefill latency",
        "static cache + compile",
        "QLORA peak RSS MiB",
        "Data pipeline",
        "Analytical model vs measurement",
        "Predictions",
    ):
        assert needle in table, needle


def test_lora_parameter_count_matches_peft(tiny_pair):
    """The memory model's LoRA size equals what PEFT creates through the project's `training.lora`."""
    import copy

    from benchmarks.flops import lora_params, parameter_counts, qlora_memory_bytes
    from training.lora import apply_lora

    shapes, _settings, _llava, mage = tiny_pair
    peft_model = apply_lora(copy.deepcopy(mage), r=4, alpha=8, dropout=0.0)
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert lora == lora_params(shapes, 4)
    memory = qlora_memory_bytes(shapes, ModelSpec("ian", 4), rank=4)
    assert memory["total"] == pytest.approx(sum(v for k, v in memory.items() if k != "total"))
    assert parameter_counts(shapes, ModelSpec("ian", 4))["projector"] > 0
