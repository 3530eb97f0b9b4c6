"""Peak memory of training and LoRA/QLoRA steps, each configuration in a fresh worker subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.flops import ModelSpec, Shapes
from benchmarks.perf.models import build_model, enable_gradient_checkpointing, make_batch, set_stage
from benchmarks.perf.settings import RunSettings, torch_dtype, torch_module
from benchmarks.perf.timing import Trainee, timed


def _trim_heap() -> None:
    """Return freed heap pages to the OS (glibc `malloc_trim`), so RSS baselines do not carry freed build buffers."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    """VmHWM (peak RSS since the last reset) where /proc has it, else `ru_maxrss` (peak since process start)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def worker_main(job: dict) -> dict:
    """Run one configuration in this (fresh) process and report its peak memory: `job["kind"]` is `"train"`
    (stage 1 then stage 2) or `"lora"` / `"qlora"` (PEFT on the stage-2 batch, loaded from `job["path"]`)."""
    torch = torch_module()
    s = Shapes(**{k: tuple(v) if isinstance(v, list) else v for k, v in job["shapes"].items()})
    settings = RunSettings(**job["settings"])
    spec = ModelSpec(**job["spec"])
    torch.set_num_threads(settings.threads or torch.get_num_threads())
    cuda = settings.device.startswith("cuda")
    report: dict = {"kind": job["kind"], "rss_start": _current_rss_bytes()}
    if job["kind"] == "train":
        model = build_model(s, spec, settings)
        if settings.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        stages = (1, 2)
    else:
        model = load_peft_model(job["path"], spec, job["kind"] == "qlora", s, settings)
        stages = ("peft",)
    _trim_heap()
    report["rss_after_build"] = _current_rss_bytes()
    report["weights_footprint"] = model.get_memory_footprint()  # parameters + buffers as stored (4-bit packed)
    report["peak_after_build"] = _peak_rss_bytes()
    report["peak_reset"] = _reset_peak_rss()  # from here on the peak is the training steps' own
    if cuda:
        report["cuda_allocated_after_build"] = torch.cuda.memory_allocated()
    for stage in stages:
        if stage != "peft":
            set_stage(model, stage)
        batch = make_batch(s, spec, 2 if stage == "peft" else stage, s.batch_size, settings)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        _trim_heap()
        rss_before = _current_rss_bytes()
        _reset_peak_rss()
        trainee = Trainee(model, batch, 2 if stage == "peft" else stage)
        steps = max(2, job.get("steps", 2))
        if job["kind"] == "qlora":
            steps = min(steps, 3)  # bitsandbytes' CPU 4-bit path is slow (see docs/performance.md)
        seconds = [timed(trainee.step, settings.device) for _ in range(steps)]
        entry = {
            "peak_rss": _peak_rss_bytes(),
            "rss_before": rss_before,
            "step_s": seconds,
            "trainable_params": sum(p.numel() for p in trainee.params),
        }
        if cuda:
            entry["cuda_peak_allocated"] = torch.cuda.max_memory_allocated()
        report[f"stage{stage}" if stage != "peft" else "peft"] = entry
        trainee.close()
        del trainee
    return report


def load_peft_model(path: str, spec: ModelSpec, quantized: bool, s: Shapes, settings: RunSettings):
    """LoRA (full-precision base) or QLoRA (4-bit NF4 base, tower/projector/lm_head kept) on the LM, projector fully
    trained, through the project's `training.lora` helpers."""
    from training.lora import apply_lora, quantization_config

    kwargs = {"dtype": torch_dtype(settings.dtype)}
    if quantized:
        compute = torch_dtype(settings.dtype)
        kwargs.update(quantization_config=quantization_config(compute), device_map=settings.device)
    if spec.projector == "llava":
        from transformers import LlavaForConditionalGeneration as cls
    else:
        from modeling_mage import MageForConditionalGeneration as cls
    model = cls.from_pretrained(path, **kwargs)
    if not quantized:
        model = model.to(settings.device)
    return apply_lora(
        model,
        r=s.lora_rank,
        alpha=2 * s.lora_rank,
        dropout=0.0,
        quantized=quantized,
        gradient_checkpointing=settings.gradient_checkpointing,
    )


def run_worker(job: dict, timeout: float = 3600) -> dict:
    """Run `worker_main(job)` in a fresh Python process; errors come back as `{"error": ...}`."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(job, handle)
        job_path = handle.name
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.perf", "--worker", job_path],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        os.unlink(job_path)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("PERF_WORKER_RESULT "):
            return json.loads(line[len("PERF_WORKER_RESULT ") :])
    return {"error": f"worker exited with {proc.returncode}: {proc.stderr[-2000:]}"}


def _job(kind: str, s: Shapes, spec: ModelSpec, settings: RunSettings, **extra) -> dict:
    return {"kind": kind, "shapes": s.to_dict(), "settings": vars(settings), "spec": vars(spec), **extra}


def _mib(value: float) -> float:
    return value / 2**20


def measure_memory(s: Shapes, models: dict, settings: RunSettings, log) -> dict:
    """Peak memory of stage-1 and stage-2 training steps, one fresh subprocess per model."""
    results = {}
    cuda = settings.device.startswith("cuda")
    for label, (spec, _model) in models.items():
        if spec.projector == "ian" and (not spec.itdm or (settings.quick and spec.queries != s.queries[0])):
            continue
        report = run_worker(_job("train", s, spec, settings))
        if "error" in report:
            results[label] = report
            log(f"  memory {label}: {report['error'][:300]}")
            continue
        entry = {"weights_rss_mib": _mib(report["rss_after_build"] - report["rss_start"])}
        for stage in (1, 2):
            stage_report = report[f"stage{stage}"]
            entry[f"stage{stage}_peak_rss_mib"] = _mib(stage_report["peak_rss"])
            entry[f"stage{stage}_step_delta_mib"] = _mib(stage_report["peak_rss"] - stage_report["rss_before"])
            if cuda:
                entry[f"stage{stage}_cuda_peak_mib"] = _mib(stage_report["cuda_peak_allocated"])
        results[label] = entry
        log(
            f"  memory {label}: stage-2 peak RSS {entry['stage2_peak_rss_mib']:.0f} MiB "
            f"(step delta {entry['stage2_step_delta_mib']:.0f} MiB)"
        )
    return results


def measure_lora(s: Shapes, models: dict, settings: RunSettings, log) -> dict:
    """LoRA vs QLoRA (bitsandbytes 4-bit) stage-2 step time and peak memory, per model, fresh subprocess each."""
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (spec, model) in models.items():
            if spec.projector == "ian" and (not spec.itdm or spec.queries != s.queries[0]):
                continue
            if settings.quick and spec.projector == "llava":
                continue
            path = Path(tmp) / label
            model.save_pretrained(path)
            for kind in ("lora", "qlora"):
                report = run_worker(_job(kind, s, spec, settings, path=str(path), steps=settings.repeats + 1))
                if "error" in report:
                    results.setdefault(label, {})[kind] = report
                    log(f"  {kind} {label}: {report['error'][:300]}")
                    continue
                peft = report["peft"]
                entry = {
                    "step_s_median": statistics.median(peft["step_s"][1:]),
                    "step_s_all": peft["step_s"],
                    "peak_rss_mib": _mib(peft["peak_rss"]),
                    "weights_rss_mib": _mib(report["rss_after_build"] - report["rss_start"]),
                    "weights_footprint_mib": _mib(report["weights_footprint"]),
                    "step_delta_mib": _mib(peft["peak_rss"] - peft["rss_before"]),
                    "trainable_params": peft["trainable_params"],
                }
                if "cuda_peak_allocated" in peft:
                    entry["cuda_peak_mib"] = _mib(peft["cuda_peak_allocated"])
                results.setdefault(label, {})[kind] = entry
            pair = results.get(label, {})
            if "peak_rss_mib" in pair.get("lora", {}) and "peak_rss_mib" in pair.get("qlora", {}):
                pair["qlora_over_lora_peak"] = pair["qlora"]["peak_rss_mib"] / pair["lora"]["peak_rss_mib"]
                pair["qlora_over_lora_weights"] = (
                    pair["qlora"]["weights_footprint_mib"] / pair["lora"]["weights_footprint_mib"]
                )
                log(
                    f"  {label}: LoRA peak {pair['lora']['peak_rss_mib']:.0f} MiB, QLoRA "
                    f"{pair['qlora']['peak_rss_mib']:.0f} MiB; step {pair['lora']['step_s_median']:.2f} s vs "
                    f"{pair['qlora']['step_s_median']:.2f} s"
                )
    return results
