"""Measured MAGE/LLaVA ratios and the analytical model's predictions next to them."""

from __future__ import annotations

import statistics

from benchmarks.flops import Machine, Shapes, predict, relative_error


def ratios_against_llava(results: dict, s: Shapes) -> dict:
    """Measured MAGE/LLaVA ratios from this run (speed: > 1 = MAGE faster; memory: < 1 = MAGE smaller).

    Training and prefill speed-ups are *paired*: the median over repeat rounds of LLaVA's time / MAGE's time in the
    same round (the rounds are interleaved, so a slow phase of the shared machine hits both sides of a pair). The
    ratio of the two medians is kept as `*_speedup_of_medians`.
    """
    llava = f"LLaVA-{s.num_patches}"
    out: dict = {}

    def paired(rows: dict) -> dict:
        base = rows[llava]["all_s"]
        return {k: statistics.median(b / m for b, m in zip(base, v["all_s"])) for k, v in rows.items()}

    def of_medians(rows: dict) -> dict:
        return {k: rows[llava]["median_s"] / v["median_s"] for k, v in rows.items()}

    for stage in ("stage1", "stage2"):
        out[f"{stage}_speedup"] = paired(results["training"][stage])
        out[f"{stage}_speedup_of_medians"] = of_medians(results["training"][stage])
    if "prefill" in results:
        out["prefill_speedup"] = paired(results["prefill"])
        out["prefill_speedup_of_medians"] = of_medians(results["prefill"])
    for bs, rows in results.get("decode", {}).items():
        if not isinstance(rows, dict):
            continue
        for mode in ("eager_dynamic", "static_compiled"):
            out[f"decode_{bs}_{mode}_speedup"] = {
                k: v[mode]["tokens_per_s"] / rows[llava][mode]["tokens_per_s"] for k, v in rows.items()
            }
    memory = results.get("memory", {})
    if llava in memory and "stage2_peak_rss_mib" in memory[llava]:
        for key in ("stage2_peak_rss_mib", "stage2_step_delta_mib", "stage1_step_delta_mib"):
            out[f"{key}_ratio"] = {k: v[key] / memory[llava][key] for k, v in memory.items() if key in v}
    return out


def machine_of(results: dict) -> Machine | None:
    """The run's measured machine balance (`measure_machine`) as a `benchmarks.flops.Machine`, if measured."""
    machine = results.get("machine")
    if not machine or "gemm_flop_per_s" not in machine:
        return None
    dtype_bytes = {"float32": 4, "bfloat16": 2, "float16": 2}[results["settings"].get("dtype", "float32")]
    return Machine(machine["gemm_flop_per_s"], machine["bandwidth_bytes_per_s"], dtype_bytes, "measured")


def compare_with_model(s: Shapes, measured: dict, machine: Machine | None = None) -> dict:
    """The analytical model's predicted ratios next to the measured ones, with the relative error.

    `predicted` is the FLOP model (matmul + element-wise FLOPs); `matmul_only` the same without the element-wise
    FLOPs; `time_model` (with the run's measured `machine`) matmul FLOPs at the GEMM rate + element-wise traffic at
    the bandwidth."""
    rows = {}
    for q in s.queries:
        label = f"MAGE-{q}"
        prediction = predict(s, q, machine=machine)
        pairs = {
            "stage1_speedup": "stage1_speedup",
            "stage2_speedup": "stage2_speedup",
            "prefill_speedup": "prefill_speedup",
            "stage2_speedup_noITDM": "stage2_speedup_without_itdm",
        }
        entry = {}
        for key, field_name in pairs.items():
            source = (f"{label}-noITDM", "stage2_speedup") if key.endswith("noITDM") else (label, key)
            value = measured.get(source[1], {}).get(source[0])
            if value is None:
                continue
            predicted = getattr(prediction, field_name)
            entry[key] = {
                "predicted": predicted,
                "measured": value,
                "rel_error": relative_error(predicted, value),
                "matmul_only": prediction.matmul_only[field_name],
            }
            if prediction.time_model:
                time_model = prediction.time_model[field_name]
                entry[key].update(time_model=time_model, time_model_rel_error=relative_error(time_model, value))
        entry["ian_share_stage2_predicted"] = prediction.ian_share_stage2
        rows[label] = entry
    return rows
