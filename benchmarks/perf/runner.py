"""One benchmark run: build every model once, run every measurement, derive ratios, model comparison and targets."""

from __future__ import annotations

import os

from benchmarks.flops import (
    SHAPES,
    ModelSpec,
    Precision,
    Shapes,
    predict,
    predict_anchored,
    qlora_memory_bytes,
    train_step_flops,
)
from benchmarks.perf.comparison import compare_with_model, machine_of, ratios_against_llava
from benchmarks.perf.environment import environment
from benchmarks.perf.machine import measure_machine
from benchmarks.perf.memory import measure_lora, measure_memory
from benchmarks.perf.models import build_model, enable_gradient_checkpointing
from benchmarks.perf.pipeline import measure_data_pipeline
from benchmarks.perf.report import check_targets
from benchmarks.perf.settings import RunSettings, model_specs, torch_module
from benchmarks.perf.speed import measure_decode, measure_prefill, measure_projector_share, measure_training
from benchmarks.perf.timing import configure_allocator


def run_benchmark(
    shapes: Shapes, settings: RunSettings, command: str = "", log=print, parts: set | None = None
) -> dict:
    """Build every model once and run every measurement; returns the JSON-able results."""
    torch = torch_module()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    allocator = configure_allocator(settings)
    parts = parts or {"training", "machine", "share", "prefill", "decode", "memory", "lora", "pipeline"}
    llava_label = f"LLaVA-{shapes.num_patches}"
    models = {}
    for spec in model_specs(shapes):
        label = spec.label(shapes)
        if spec.projector == "ian" and not spec.itdm and f"MAGE-{spec.queries}" in models:
            models[label] = (spec, models[f"MAGE-{spec.queries}"][1])  # same model, step without ITDM
            continue
        models[label] = (spec, build_model(shapes, spec, settings))
        if settings.gradient_checkpointing:
            enable_gradient_checkpointing(models[label][1])
    log(f"built {', '.join(models)} ({shapes.name}, {settings.device}, {settings.dtype})")
    results: dict = {
        "command": command,
        "shapes": shapes.to_dict(),
        "settings": vars(settings),
        "environment": {**environment(settings), **allocator},
    }
    results["parameters"] = {label: sum(p.numel() for p in m.parameters()) for label, (_s, m) in models.items()}
    results["training"] = measure_training(shapes, models, settings, log)
    rates = {
        k: v["samples_per_s"]
        for k, v in results["training"]["stage2"].items()
        if k in (llava_label, f"MAGE-{shapes.queries[0]}")
    }
    measurements = {
        "machine": ("machine", lambda: measure_machine(shapes, settings, log)),
        "projector_share": ("share", lambda: measure_projector_share(shapes, models, settings, log)),
        "prefill": ("prefill", lambda: measure_prefill(shapes, models, settings, log)),
        "decode": ("decode", lambda: measure_decode(shapes, models, settings, log)),
        "data_pipeline": ("pipeline", lambda: measure_data_pipeline(shapes, settings, rates, log)),
        "memory": ("memory", lambda: measure_memory(shapes, models, settings, log)),
        "lora": ("lora", lambda: measure_lora(shapes, models, settings, log)),
    }
    skipped = {"memory": not settings.memory, "lora": not settings.lora}
    errors = {}
    for key, (part, measure) in measurements.items():
        if part not in parts or skipped.get(key):
            continue
        try:
            results[key] = measure()
        except torch.OutOfMemoryError as error:  # e.g. 13B on one GPU: keep the other figures
            errors[key] = f"out of memory: {str(error)[:500]}"
            log(f"  {key}: {errors[key]}")
            if settings.device.startswith("cuda"):
                torch.cuda.empty_cache()
    results["errors"] = errors
    results["environment"]["load_average_end"] = os.getloadavg()
    rederive(results)
    return results


def rederive(results: dict) -> dict:
    """Recompute everything derived (ratios, model comparison, targets, predictions) from the raw measurements."""
    shapes = Shapes(**{k: tuple(v) if isinstance(v, list) else v for k, v in results["shapes"].items()})
    specs = {spec.label(shapes): spec for spec in model_specs(shapes)}
    for stage in (1, 2):  # the model's FLOPs per step (and achieved GFLOP/s) from the current benchmarks/flops.py
        for label, row in results["training"][f"stage{stage}"].items():
            parts = train_step_flops(shapes, specs[label], stage)
            row["model_gflop_per_step"] = parts["total"] * shapes.batch_size / 1e9
            row["model_matmul_gflop_per_step"] = parts["matmul"] * shapes.batch_size / 1e9
            row["achieved_gflop_per_s"] = row["model_gflop_per_step"] / row["median_s"]
    results["ratios"] = ratios_against_llava(results, shapes)
    results["model_vs_measured"] = compare_with_model(shapes, results["ratios"], machine_of(results))
    results["targets"] = check_targets(results, shapes)
    results["predictions_paper_shapes"] = paper_predictions()
    return results


def paper_predictions() -> list[dict]:
    """7B / 13B predictions (bf16, gradient checkpointing); the LLaVA-576-7B H100 anchor (`H100_ANCHORS`) applied at
    7B."""
    rows = []
    for name in ("7b", "13b"):
        s = SHAPES[name]
        for q in s.queries:
            p = predict(s, q, Precision(2, 2, 2, 8), checkpointing=True)
            entry = {k: v for k, v in vars(p).items() if k != "flops"}
            # The H100 anchors are LLaVA-576-**7B** figures: an absolute 13B figure would need a 13B anchor
            entry["anchored_stage2_samples_per_s"] = (
                predict_anchored(s, q)["stage2_samples_per_s"] if name == "7b" else None
            )
            entry["qlora_peak_gib"] = qlora_memory_bytes(s, ModelSpec("ian", q))["total"] / 2**30
            entry["llava_qlora_peak_gib"] = qlora_memory_bytes(s, ModelSpec("llava"))["total"] / 2**30
            rows.append(entry)
    return rows
