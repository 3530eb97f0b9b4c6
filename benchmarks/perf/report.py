"""The results as Markdown tables, and the issue's targets evaluated on a run."""

from __future__ import annotations

import math

from benchmarks.flops import GPU_TARGETS, H100_ANCHORS, Shapes


def _pct(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.0f} %"


def _load(values) -> str:
    return "–" if not values else "/".join(f"{v:.1f}" for v in values)


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def markdown_report(results: dict) -> str:
    """The results as Markdown tables: absolute figures per model, ratios vs LLaVA, model vs measurement."""
    s = Shapes(**{k: tuple(v) if isinstance(v, list) else v for k, v in results["shapes"].items()})
    env = results["environment"]
    llava = f"LLaVA-{s.num_patches}"
    labels = list(results["training"]["stage2"])
    lines = [
        f"# MAGE vs LLaVA — `{s.name}` shapes on {env['device']} ({env['dtype']})",
        "",
        f"{env['date_utc']} · {env['cpu_model']} · {env['cpu_count']} cores ({env['torch_threads']} torch threads) · "
        + " · ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "",
        f"Command: `{results['command']}`" + (f" → `{results['output']['json']}`" if "output" in results else ""),
        "",
        f"Allocator: {env.get('allocator', 'default')} (glibc mallopt applied: {env.get('mallopt_applied', False)}); "
        f"load average {_load(env.get('load_average_start'))} at the start, {_load(env.get('load_average_end'))} "
        "at the end.",
        "",
        f"Shapes: tower {s.vision_layers}×{s.vision_hidden} at {s.image_size} px / patch {s.patch_size} "
        f"({s.num_patches} patches), LM {s.lm_layers}×{s.lm_hidden} (vocab {s.vocab_size}), batch {s.batch_size}, "
        f"text {s.stage1_text_tokens} (stage 1) / {s.stage2_text_tokens} (stage 2) / {s.prompt_text_tokens} (prompt) "
        f"tokens. Medians of {results['settings']['repeats']} interleaved repeats.",
        "",
        "| metric | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    ratios = results.get("ratios", {})

    def row(name: str, values: dict, digits: int = 2, ratio_key: str | None = None):
        cells = []
        for label in labels:
            value = values.get(label)
            cell = _fmt(value, digits)
            if ratio_key and label != llava and label in ratios.get(ratio_key, {}):
                cell += f" ({ratios[ratio_key][label]:.2f}×)"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    training = results["training"]
    for stage in ("stage1", "stage2"):
        row(f"{stage} samples/s", {k: v["samples_per_s"] for k, v in training[stage].items()}, 2, f"{stage}_speedup")
        row(f"{stage} tokens/s", {k: v["tokens_per_s"] for k, v in training[stage].items()}, 0)
        row(f"{stage} achieved GFLOP/s", {k: v["achieved_gflop_per_s"] for k, v in training[stage].items()}, 1)
        if any("minor_faults_per_step" in v for v in training[stage].values()):
            row(
                f"{stage} minor page faults per step",
                {k: v.get("minor_faults_per_step") for k, v in training[stage].items()},
                0,
            )
    memory = results.get("memory", {})
    for key, name in (
        ("stage1_peak_rss_mib", "stage1 peak RSS MiB"),
        ("stage2_peak_rss_mib", "stage2 peak RSS MiB"),
        ("stage2_step_delta_mib", "stage2 step memory MiB (peak − after build)"),
        ("stage2_cuda_peak_mib", "stage2 CUDA peak MiB"),
    ):
        values = {k: v.get(key) for k, v in memory.items() if isinstance(v, dict)}
        if any(v is not None for v in values.values()):
            row(name, values, 0, f"{key}_ratio" if f"{key}_ratio" in ratios else None)
    share = results.get("projector_share", {})
    if share:
        row(
            "projector % of stage-2 step (fwd+bwd, timed in the step)",
            {k: 100 * v["share"] for k, v in share.items()},
            1,
        )
        row(
            "projector % of step forward (profiler)",
            {k: 100 * v["forward_share_profiler"] for k, v in share.items()},
            1,
        )
    if "prefill" in results:
        row(
            "prefill latency ms (bs 1)",
            {k: v["latency_ms"] for k, v in results["prefill"].items()},
            1,
            "prefill_speedup",
        )
    for bs, rows_ in results.get("decode", {}).items():
        if not isinstance(rows_, dict):
            continue
        row(
            f"decode tok/s {bs} eager dynamic cache",
            {k: v["eager_dynamic"]["tokens_per_s"] for k, v in rows_.items()},
            1,
            f"decode_{bs}_eager_dynamic_speedup",
        )
        row(
            f"decode tok/s {bs} static cache + compile",
            {k: v["static_compiled"]["tokens_per_s"] for k, v in rows_.items()},
            1,
            f"decode_{bs}_static_compiled_speedup",
        )
    lora = results.get("lora", {})
    for kind in ("lora", "qlora"):
        values = {k: v.get(kind, {}).get("step_s_median") for k, v in lora.items()}
        if any(v is not None for v in values.values()):
            row(f"{kind.upper()} stage-2 step s", values, 2)
            row(f"{kind.upper()} peak RSS MiB", {k: v.get(kind, {}).get("peak_rss_mib") for k, v in lora.items()}, 0)
            row(
                f"{kind.upper()} weights MiB (get_memory_footprint)",
                {k: v.get(kind, {}).get("weights_footprint_mib") for k, v in lora.items()},
                0,
            )
    lines.append("")
    lines.append(
        "Ratios in brackets are against LLaVA from the same run (speed: > 1 = MAGE faster; memory: < 1 = "
        "MAGE smaller); training and prefill ratios are paired per interleaved round (median of LLaVA time / "
        "MAGE time). `-noITDM` = the MAGE step without its ITDM text forward."
    )
    pipeline = results.get("data_pipeline")
    if pipeline:
        lines += [
            "",
            "## Data pipeline (decode JPEG + CLIP processing + tokenise/mask + collate)",
            "",
            "| workers | samples/s | × MAGE stage-2 step rate | × LLaVA stage-2 step rate |",
            "|---|---|---|---|",
        ]
        versus = pipeline.get("vs_stage2_step_rate", {})
        head = f"MAGE-{s.queries[0]}"
        for workers in (0, 2):
            key = f"workers{workers}"
            lines.append(
                f"| {workers} | {_fmt(pipeline[key]['samples_per_s'], 1)} | "
                f"{_fmt(versus.get(head, {}).get(key), 1)} | {_fmt(versus.get(llava, {}).get(key), 1)} |"
            )
    comparison = results.get("model_vs_measured", {})
    if comparison:
        machine = results.get("machine", {})
        lines += [
            "",
            "## Analytical model vs measurement (MAGE/LLaVA ratios)",
            "",
            "FLOP model = matrix-multiply + element-wise FLOPs (time ∝ FLOPs); time model = matmul FLOPs at the "
            "measured GEMM rate + element-wise traffic at the measured bandwidth"
            + (
                f" ({machine['gemm_flop_per_s'] / 1e9:.1f} GFLOP/s, {machine['bandwidth_bytes_per_s'] / 1e9:.1f}"
                " GB/s, benchmarks.perf.machine.measure_machine)"
                if "gemm_flop_per_s" in machine
                else ""
            )
            + ".",
            "",
            "| model | quantity | matmul FLOPs only | FLOP model | time model | measured | FLOP-model error | "
            "time-model error |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label, entry in comparison.items():
            for key, value in entry.items():
                if isinstance(value, dict):
                    lines.append(
                        f"| {label} | {key} | {_fmt(value.get('matmul_only'))} | {value['predicted']:.2f} | "
                        f"{_fmt(value.get('time_model'))} | {value['measured']:.2f} | "
                        f"{100 * value['rel_error']:.0f} % | {_pct(value.get('time_model_rel_error'))} |"
                    )
    targets = results.get("targets")
    if targets:
        lines += ["", "## Targets", "", "| target | value | met |", "|---|---|---|"]
        for name, entry in targets.items():
            lines.append(f"| {name} | {entry['value']} | {'yes' if entry['met'] else 'NO'} |")
    lines += [
        "",
        "## Predictions at the paper's shapes (analytical model, not measured)",
        "",
        "| shapes | MAGE-Q | stage-1 speedup | stage-2 speedup | stage-2 w/o ITDM | prefill speedup | "
        "IAN share | KV-cache ratio | predicted H100 stage-2 samples/s (7B anchor) | QLoRA (r = 128) peak GiB MAGE / "
        "LLaVA |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in results.get("predictions_paper_shapes", []):
        lines.append(
            f"| {entry['shapes']} | {entry['queries']} | {entry['stage1_speedup']:.2f} | {entry['stage2_speedup']:.2f} | "
            f"{entry['stage2_speedup_without_itdm']:.2f} | {entry['prefill_speedup']:.2f} | "
            f"{100 * entry['ian_share_stage2']:.1f} % | {entry['kv_cache_ratio']:.2f} | "
            f"{_fmt(entry['anchored_stage2_samples_per_s'], 1)} | "
            f"{entry.get('qlora_peak_gib', float('nan')):.1f} / {entry.get('llava_qlora_peak_gib', float('nan')):.1f} |"
        )
    lines.append("")
    lines.append(f"H100 anchors (LLaVA-576-7B, docs/performance.md): {H100_ANCHORS}; GPU targets: {GPU_TARGETS}.")
    return "\n".join(lines) + "\n"


def check_targets(results: dict, s: Shapes) -> dict:
    """The issue's CPU targets, evaluated on this run."""
    head = f"MAGE-{s.queries[0]}"
    ratios = results.get("ratios", {})
    targets = {}
    speedup = ratios.get("stage2_speedup", {}).get(head)
    if speedup is not None:
        targets[f"{head} stage-2 ≥ 2.0× LLaVA samples/s"] = {"value": round(speedup, 2), "met": speedup >= 2.0}
    share = results.get("projector_share", {}).get(head, {}).get("share")
    if share is not None:
        targets["IAN ≤ 5 % of a stage-2 step"] = {"value": f"{100 * share:.1f} %", "met": share <= 0.05}
    for bs, rows in results.get("decode", {}).items():
        if isinstance(rows, dict) and head in rows:
            value = rows[head]["static_compiled_speedup"]
            targets[f"static cache + compile faster than eager ({bs})"] = {"value": round(value, 2), "met": value > 1}
    pipeline = results.get("data_pipeline", {}).get("vs_stage2_step_rate", {}).get(head)
    if pipeline:
        targets["data pipeline ≥ 5× step rate (2 workers)"] = {
            "value": round(pipeline["workers2"], 1),
            "met": pipeline["workers2"] >= 5,
        }
    qlora = results.get("lora", {}).get(head, {}).get("qlora_over_lora_peak")
    if qlora is not None:
        targets["QLoRA peak clearly below LoRA (< 0.9×)"] = {"value": round(qlora, 2), "met": qlora < 0.9}
    speedups = [
        v
        for entry in results.get("model_vs_measured", {}).values()
        for k, v in entry.items()
        if isinstance(v, dict) and k in ("stage2_speedup", "stage1_speedup")
    ]
    if speedups:
        worst = max(v["rel_error"] for v in speedups)
        targets["analytical FLOP model within 15 % (stage 1/2 speedups)"] = {
            "value": f"max {100 * worst:.0f} %",
            "met": worst <= 0.15,
        }
        prefill = [
            v["rel_error"]
            for entry in results.get("model_vs_measured", {}).values()
            for k, v in entry.items()
            if isinstance(v, dict) and k == "prefill_speedup"
        ]
        if prefill:
            targets["analytical FLOP model within 15 % (prefill speedups)"] = {
                "value": f"max {100 * max(prefill):.0f} %",
                "met": max(prefill) <= 0.15,
            }
        timed_errors = [v["time_model_rel_error"] for v in speedups if "time_model_rel_error" in v]
        if timed_errors:
            worst = max(timed_errors)
            targets["analytical time model within 15 % (stage 1/2 speedups)"] = {
                "value": f"max {100 * worst:.0f} %",
                "met": worst <= 0.15,
            }
    return targets
