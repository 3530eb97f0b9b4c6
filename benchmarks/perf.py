"""MAGE vs transformers' LLaVA-1.5, side by side in one process: training, memory, IAN share, prefill, decode,
LoRA/QLoRA and the data pipeline. One entry point:

    python -m benchmarks.perf --shapes tiny|small|7b|13b --device cpu|cuda [--quick] [--output FILE]

Both models are built with random weights from the same `Shapes` (benchmarks/flops.py): the same CLIP tower, the same
Llama LM, batch and text lengths; LLaVA feeds all N patch tokens to the LM, MAGE Q IAN queries. Timed work is
*interleaved* (LLaVA, MAGE-64, MAGE-16, … once each per repeat) and the median over repeats is reported, so slow
phases of a shared machine hit every model alike. Ratios are against LLaVA measured in the same run. Peak memory
is measured in a fresh subprocess per configuration (RSS on CPU, allocator peak on CUDA). The analytical model's
predictions sit next to the measured ratios with their relative error.

`--device cuda` uses bf16 weights, SDPA and gradient checkpointing (pass `--no-gradient-checkpointing` to turn it off);
the `--quick` CPU run at tiny shapes exercises every function the GPU path calls.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.flops import (
    GPU_TARGETS,
    H100_ANCHORS,
    SHAPES,
    Machine,
    ModelSpec,
    Precision,
    Shapes,
    predict,
    predict_anchored,
    qlora_memory_bytes,
    relative_error,
    train_step_flops,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------------------------------ settings
@dataclass
class RunSettings:
    """How a run measures: device/dtype, repeats, steps and what to include."""

    device: str = "cpu"
    dtype: str = "float32"
    repeats: int = 3
    steps: int = 1
    warmup: int = 1
    gradient_checkpointing: bool = False
    compile_backend: str = "inductor"
    decode_tokens: int | None = None
    memory: bool = True
    lora: bool = True
    threads: int = 0
    seed: int = 0
    allocator: str = "retain"  # CPU: "retain" keeps freed heap memory in the process (see configure_allocator)
    quick: bool = False  # smoke run: memory for LLaVA + the headline MAGE only, LoRA/QLoRA for the headline MAGE only


def model_specs(shapes: Shapes) -> list[ModelSpec]:
    """LLaVA (all patches), MAGE at every Q of the shape setting, and the headline MAGE without its ITDM term."""
    specs = [ModelSpec("llava")] + [ModelSpec("ian", q) for q in shapes.queries]
    return specs + [ModelSpec("ian", shapes.queries[0], itdm=False)]


def _torch():
    import torch

    return torch


def _dtype(name: str):
    torch = _torch()
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def image_token_id(shapes: Shapes) -> int:
    return shapes.vocab_size - 1


# ---------------------------------------------------------------------------------------------------- model build
def vision_config(s: Shapes):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=s.vision_hidden, intermediate_size=s.vision_mlp, num_hidden_layers=s.vision_layers,
        num_attention_heads=s.vision_heads, image_size=s.image_size, patch_size=s.patch_size,
        projection_dim=s.vision_hidden, attn_implementation="sdpa",
    )


def text_config(s: Shapes):
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=s.lm_hidden, intermediate_size=s.lm_mlp, num_hidden_layers=s.lm_layers,
        num_attention_heads=s.lm_heads, num_key_value_heads=s.lm_kv_heads, vocab_size=s.vocab_size,
        max_position_embeddings=s.max_positions, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        tie_word_embeddings=False, attn_implementation="sdpa",
    )


def build_model(s: Shapes, spec: ModelSpec, settings: RunSettings):
    """A random-weight `LlavaForConditionalGeneration` or `MageForConditionalGeneration` on the run's device/dtype."""
    torch = _torch()
    torch.manual_seed(settings.seed)
    if spec.projector == "llava":
        from transformers import LlavaConfig, LlavaForConditionalGeneration

        config = LlavaConfig(
            vision_config=vision_config(s), text_config=text_config(s), image_token_id=image_token_id(s),
            vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
            image_seq_length=s.num_patches, tie_word_embeddings=False,
        )
        config._attn_implementation = "sdpa"
        model = LlavaForConditionalGeneration(config)
    else:
        from modeling_mage import MageConfig, MageForConditionalGeneration

        config = MageConfig(
            vision_config=vision_config(s), text_config=text_config(s), image_token_id=image_token_id(s),
            projector_type="ian", num_query_tokens=spec.queries, seb_hidden_size=s.seb_hidden,
            seb_num_layers=s.seb_layers, seb_num_heads=s.seb_heads, vab_depth=s.vab_depth,
            seb_query_source=s.seb_query_source, seb_output_norm=s.seb_output_norm, pad_token_id=0, bos_token_id=1,
            eos_token_id=2,
        )
        config._attn_implementation = "sdpa"
        model = MageForConditionalGeneration(config)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    model.generation_config.bos_token_id = 1
    return model.to(settings.device, _dtype(settings.dtype))


def enable_gradient_checkpointing(model) -> None:
    """transformers 5.23 renamed `gradient_checkpointing_enable` to `activation_checkpointing_enable`: use either."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def set_stage(model, stage: int) -> dict[str, int]:
    """Stage 1: projector only; stage 2: projector + LM (tower frozen). Works for MAGE and LLaVA (same names)."""
    from training.trainer import set_trainable_for_stage

    return set_trainable_for_stage(model, stage)


# ----------------------------------------------------------------------------------------------------- inputs
def make_batch(s: Shapes, spec: ModelSpec, stage: int, batch_size: int, settings: RunSettings, prompt: bool = False):
    """Synthetic batch: `BOS, <image>×T_img, text…` with random ids, labels on the caption (stage 1) or the second
    half of the text (stage 2, the answer), and for MAGE the ITDM text (BOS + supervised tokens).

    `prompt=True` gives a generation prompt (`s.prompt_text_tokens` of text, no labels).
    Returns a dict of tensors on the run's device: input_ids/attention_mask/labels `(B, L)`, pixel_values
    `(B, 3, H, W)` and, for MAGE training, itdm_input_ids/itdm_attention_mask/itdm_pool_mask `(B, T_sup + 1)`.
    """
    torch = _torch()
    generator = torch.Generator().manual_seed(settings.seed + stage)
    text = s.prompt_text_tokens if prompt else (s.stage1_text_tokens if stage == 1 else s.stage2_text_tokens)
    image_tokens = spec.image_tokens(s)
    ids = torch.randint(3, image_token_id(s), (batch_size, text), generator=generator)
    image = torch.full((batch_size, image_tokens), image_token_id(s))
    input_ids = torch.cat([torch.ones(batch_size, 1, dtype=torch.long), image, ids[:, 1:]], dim=1)
    pixel_values = torch.randn(batch_size, 3, s.image_size, s.image_size, generator=generator)
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": pixel_values.to(_dtype(settings.dtype)),
    }
    if not prompt:
        labels = torch.full_like(input_ids, -100)
        supervised_from = 1 + image_tokens + (0 if stage == 1 else (text - 1) // 2)
        labels[:, supervised_from:] = input_ids[:, supervised_from:]
        batch["labels"] = labels
        if spec.projector == "ian" and spec.itdm:
            supervised = input_ids[:, supervised_from:]
            batch["itdm_input_ids"] = torch.cat([torch.ones(batch_size, 1, dtype=torch.long), supervised], dim=1)
            batch["itdm_attention_mask"] = torch.ones_like(batch["itdm_input_ids"])
            pool = torch.ones_like(batch["itdm_input_ids"])
            pool[:, 0] = 0
            batch["itdm_pool_mask"] = pool
    return {key: value.to(settings.device) for key, value in batch.items()}


def tokens_per_sample(batch: dict) -> int:
    return int(batch["attention_mask"][0].sum())


# --------------------------------------------------------------------------------------------------- timing core
def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        _torch().cuda.synchronize()


def loss_of(model, batch: dict):
    """MAGE's training loss `L_ITG + itdm_weight · L_ITDM` (ITDM when the batch carries its text), LLaVA's ITG."""
    from training.losses import itdm_loss

    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "labels")}
    outputs = model(**inputs)
    loss = outputs.loss
    if "itdm_input_ids" in batch:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        d_ian, d_llm = base.get_itdm_features(
            text_input_ids=batch["itdm_input_ids"],
            text_attention_mask=batch["itdm_attention_mask"],
            text_pool_mask=batch["itdm_pool_mask"],
            image_hidden_states=outputs.image_hidden_states,
        )
        loss = loss + base.config.itdm_weight * itdm_loss(d_ian, d_llm, reduction=base.config.itdm_reduction)
    return loss


class Trainee:
    """One model prepared for one training stage: trainable parameters, a fused AdamW (Trainer's default optimizer)
    and a fixed batch."""

    def __init__(self, model, batch: dict, stage: int, lr: float = 1e-5):
        torch = _torch()
        self.model, self.batch, self.stage = model, batch, stage
        self.params = [p for p in model.parameters() if p.requires_grad]
        try:  # what transformers' Trainer uses by default with torch >= 2.8 ("adamw_torch_fused", CPU and CUDA)
            self.optimizer = torch.optim.AdamW(self.params, lr=lr, fused=True)
        except (RuntimeError, TypeError):
            self.optimizer = torch.optim.AdamW(self.params, lr=lr)
        self.model.train()

    def step(self) -> float:
        loss = loss_of(self.model, self.batch)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def close(self) -> None:
        self.optimizer = None
        for p in self.params:
            p.grad = None


def timed(fn, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def minor_faults() -> int:
    """Minor page faults of this process so far (first touches of fresh memory pages)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def interleaved(jobs: dict[str, callable], repeats: int, warmup: int, device: str, steps: int = 1,
                faults: dict | None = None) -> dict[str, list]:
    """Run `warmup` untimed rounds of every job, then `repeats` rounds of `steps` calls of each job in turn
    (interleaved). Warm-up goes round by round too: the allocations that persist after a job's first call (AdamW
    states, gradients) land in heap space another job used, so the heap reaches its high-water mark only after
    every job has run twice.

    Returns per-job lists of seconds per call, one entry per round; if `faults` is a dict, it receives per-job
    lists of minor page faults per call.
    """
    for _ in range(warmup):
        for job in jobs.values():
            job()
    times: dict[str, list] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            before = minor_faults()
            total = timed(lambda job=job: [job() for _ in range(steps)], device)
            times[name].append(total / steps)
            if faults is not None:
                faults.setdefault(name, []).append((minor_faults() - before) / steps)
    return times


def configure_allocator(settings: RunSettings) -> dict:
    """How freed CPU memory is handled in the timing process (recorded in the JSON).

    `"retain"` (default): glibc's `mallopt(M_MMAP_MAX, 0)` and `mallopt(M_TRIM_THRESHOLD, 1 GiB)`, so every tensor
    comes from the process heap and freed memory stays there for the next step. With glibc's defaults, blocks above
    the mmap threshold (at most 32 MiB) that no free heap chunk holds are mmapped per allocation and unmapped on
    free, so every step touches fresh pages again: LLaVA's 4 × 320 × 32 064 fp32 logits and their gradients
    (157 MiB each) cost ≈ 315 000 minor page faults per stage-2 step on this VM and MAGE-64's step 0–51 000
    (docs/performance.md) — an allocator/VM artefact
    that inflates LLaVA's time, which a GPU's caching allocator never pays. `"default"` leaves glibc alone (the
    behaviour of the runs before 2026-12). Memory subprocesses always use the default (their RSS peaks must not
    include retained free memory). No-op on CUDA and where glibc is not found.
    """
    info = {"allocator": settings.allocator, "mallopt_applied": False}
    if settings.allocator == "default" or settings.device.startswith("cuda"):
        return info
    if settings.allocator != "retain":
        raise ValueError(f"allocator={settings.allocator!r}: expected 'retain' or 'default'.")
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
        info["mallopt_applied"] = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**30))
    return info


def summarize(seconds: list[float]) -> dict:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "all_s": [round(t, 5) for t in seconds]}


# ----------------------------------------------------------------------------------------------- measurements
def measure_training(s: Shapes, models: dict, settings: RunSettings, log) -> dict:
    """Stage-1 and stage-2 samples/s and tokens/s, interleaved across models; achieved GFLOP/s from the model."""
    results: dict = {}
    for stage in (1, 2):
        trainees = {}
        for label, (spec, model) in models.items():
            set_stage(model, stage)
            batch = make_batch(s, spec, stage, s.batch_size, settings)
            trainees[label] = Trainee(model, batch, stage)
        log(f"stage {stage}: {len(trainees)} models × {settings.repeats} interleaved repeats")
        faults: dict = {}
        times = interleaved({k: t.step for k, t in trainees.items()}, settings.repeats, settings.warmup,
                            settings.device, settings.steps, faults=faults)
        stage_results = {}
        for label, trainee in trainees.items():
            spec = models[label][0]
            median = statistics.median(times[label])
            flops = train_step_flops(s, spec, stage)["total"] * s.batch_size
            stage_results[label] = {
                **summarize(times[label]),
                "samples_per_s": s.batch_size / median,
                "tokens_per_s": s.batch_size * tokens_per_sample(trainee.batch) / median,
                "tokens_per_sample": tokens_per_sample(trainee.batch),
                "model_gflop_per_step": flops / 1e9,
                "achieved_gflop_per_s": flops / median / 1e9,
                "minor_faults_per_step": statistics.median(faults[label]),
                "minor_faults_all": faults[label],
            }
            trainee.close()
        results[f"stage{stage}"] = stage_results
        log("  " + ", ".join(f"{k} {v['samples_per_s']:.2f} samples/s" for k, v in stage_results.items()))
    return results


@contextlib.contextmanager
def _record_modules(model, names: dict[str, str]):
    """`torch.profiler.record_function` around the forward of the given sub-modules (`{label: attribute path}`)."""
    torch = _torch()
    handles, open_ranges = [], {}
    for label, path in names.items():
        module = model
        for part in path.split("."):
            module = getattr(module, part)

        def pre(_module, _args, label=label):
            open_ranges[label] = torch.autograd.profiler.record_function(f"mage::{label}")
            open_ranges[label].__enter__()

        def post(_module, _args, _output, label=label):
            open_ranges.pop(label).__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def projector_step_share(model, trainee: Trainee, settings: RunSettings, repeats: int) -> dict:
    """The projector's share of whole training steps, timed inside the steps.

    Forward: pre/post forward hooks on the projector. Backward: the projector sits at the leaf end of the graph (the
    tower is frozen), so its backward runs from the moment its output gradient is ready (a full backward pre-hook)
    to the end of `loss.backward()`. Share = (forward + backward) / (forward + backward + optimizer step), median
    over `repeats` steps.
    """
    projector = model.model.multi_modal_projector
    marks: dict[str, float] = {}

    def stamp(name):
        def hook(*_args):
            synchronize(settings.device)
            marks[name] = time.perf_counter()

        return hook

    handles = [projector.register_forward_pre_hook(stamp("fwd0")), projector.register_forward_hook(stamp("fwd1")),
               projector.register_full_backward_pre_hook(stamp("bwd0"))]
    shares, forward, backward, steps = [], [], [], []
    try:
        for _ in range(repeats):
            synchronize(settings.device)
            start = time.perf_counter()
            loss = loss_of(trainee.model, trainee.batch)
            loss.backward()
            synchronize(settings.device)
            backward_end = time.perf_counter()
            trainee.optimizer.step()
            trainee.optimizer.zero_grad(set_to_none=True)
            synchronize(settings.device)
            end = time.perf_counter()
            fwd, bwd = marks["fwd1"] - marks["fwd0"], backward_end - marks["bwd0"]
            forward.append(fwd)
            backward.append(bwd)
            steps.append(end - start)
            shares.append((fwd + bwd) / (end - start))
    finally:
        for handle in handles:
            handle.remove()
    return {"share": statistics.median(shares), "shares_all": [round(x, 4) for x in shares],
            "forward_s": statistics.median(forward), "backward_s": statistics.median(backward),
            "step_s": statistics.median(steps)}


_OP_CLASSES = {
    "gemm": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
                  "aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_flash_attention_backward",
                  "aten::_scaled_dot_product_efficient_attention",
                  "aten::_scaled_dot_product_efficient_attention_backward",
                  "aten::_scaled_dot_product_cudnn_attention", "aten::_scaled_dot_product_cudnn_attention_backward"),
    "convolution": ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution",
                    "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward", "aten::thnn_conv2d"),
    "loss": ("aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::nll_loss_forward",
             "aten::nll_loss_backward"),
    "optimizer": ("aten::_fused_adamw_", "aten::_foreach_add_", "aten::_foreach_mul_", "aten::_foreach_lerp_",
                  "aten::_foreach_addcmul_", "aten::_foreach_addcdiv_", "aten::_foreach_sqrt",
                  "aten::_foreach_div_"),
}


def op_class(name: str) -> str:
    """The profiler's operator name → gemm / attention / convolution / loss / optimizer / other (element-wise,
    copies, autograd bookkeeping): the classes the analytical time model separates."""
    for kind, names in _OP_CLASSES.items():
        if name in names:
            return kind
    return "other"


def measure_projector_share(s: Shapes, models: dict, settings: RunSettings, log) -> dict:
    """The projector's share of a stage-2 step (`projector_step_share`), and a `torch.profiler` trace of one step
    with `record_function` ranges around the forward of tower / projector / LM (and the IAN's VAB, query CNN and
    cross-attention layers): forward time per part and the step's top operators."""
    from torch.profiler import ProfilerActivity, profile

    results = {}
    for label, (spec, model) in models.items():
        if spec.projector == "ian" and not spec.itdm:
            continue
        set_stage(model, 2)
        trainee = Trainee(model, make_batch(s, spec, 2, s.batch_size, settings), 2)
        trainee.step()
        in_step = projector_step_share(model, trainee, settings, max(3, settings.repeats))
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if settings.device.startswith("cuda") else [])
        parts = {"vision_tower": "model.vision_tower", "projector": "model.multi_modal_projector",
                 "language_model": "model.language_model"}
        if spec.projector == "ian":  # where the IAN's time goes
            parts.update({"ian.vab": "model.multi_modal_projector.vab",
                          "ian.query_cnn": "model.multi_modal_projector.seb.query_cnn",
                          **{f"ian.seb_layer{i}": f"model.multi_modal_projector.seb.layers.{i}"
                             for i in range(s.seb_layers)}})
        with _record_modules(model, parts), profile(activities=activities) as prof:
            wall = timed(trainee.step, settings.device)
        events = {e.key: e for e in prof.key_averages()}
        cuda = settings.device.startswith("cuda")  # on a GPU the ranges' device time is what counts, not launches

        def seconds(event, cuda=cuda):
            return (getattr(event, "device_time_total", 0.0) if cuda else event.cpu_time_total) / 1e6

        forward = {name: seconds(events[f"mage::{name}"]) for name in parts if f"mage::{name}" in events}
        by_class: dict[str, float] = {}
        for event in prof.key_averages():
            if not event.key.startswith("mage::"):
                kind = op_class(event.key)
                by_class[kind] = by_class.get(kind, 0.0) + event.self_cpu_time_total / 1e6
        top = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
        results[label] = {
            **in_step,
            "profiled_step_s": wall,
            "profiler_forward_s": forward,
            "forward_share_profiler": forward.get("projector", 0.0) / wall,
            "profiler_self_s_by_class": {k: round(v, 5) for k, v in sorted(by_class.items())},
            "top_ops": [{"op": e.key, "self_cpu_s": round(e.self_cpu_time_total / 1e6, 4), "calls": e.count}
                        for e in top if not e.key.startswith("mage::")],
        }
        trainee.close()
        log(f"  {label}: projector {100 * in_step['share']:.1f}% of a stage-2 step "
            f"(fwd {1000 * in_step['forward_s']:.0f} ms + bwd {1000 * in_step['backward_s']:.0f} ms of "
            f"{1000 * in_step['step_s']:.0f} ms)")
    return results


def measure_prefill(s: Shapes, models: dict, settings: RunSettings, log) -> dict:
    """Prefill latency at batch 1: one forward over the prompt with the cache on, logits for the last token only."""
    torch = _torch()
    jobs, batches = {}, {}
    for label, (spec, model) in models.items():
        if spec.projector == "ian" and not spec.itdm:
            continue
        model.eval()
        batches[label] = make_batch(s, spec, 2, 1, settings, prompt=True)

        def job(model=model, batch=batches[label]):
            with torch.inference_mode():
                model(**batch, use_cache=True, logits_to_keep=1)

        jobs[label] = job
    times = interleaved(jobs, settings.repeats, settings.warmup, settings.device)
    results = {label: {**summarize(t), "latency_ms": 1000 * statistics.median(t),
                       "prompt_tokens": tokens_per_sample(batches[label])} for label, t in times.items()}
    log("  prefill: " + ", ".join(f"{k} {v['latency_ms']:.1f} ms" for k, v in results.items()))
    return results


class TokenClock:
    """A `LogitsProcessor` that only records the time each new token's scores arrive (one call per decoding step,
    outside the model's forward, so it does not disturb a compiled graph)."""

    def __init__(self, device: str):
        self.device, self.stamps = device, []

    def __call__(self, input_ids, scores):
        synchronize(self.device)
        self.stamps.append(time.perf_counter())
        return scores


def _generate(model, batch: dict, new_tokens: int, static: bool, compile_backend: str, clock: TokenClock | None = None):
    from transformers import CompileConfig, LogitsProcessorList

    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
    if clock is not None:
        kwargs["logits_processor"] = LogitsProcessorList([clock])
    if static:
        config = CompileConfig(fullgraph=False, dynamic=False, backend=compile_backend, mode="default")
        config._compile_all_devices = True  # transformers compiles on GPU only unless told otherwise
        kwargs.update(cache_implementation="static", compile_config=config)
    return model.generate(**batch, **kwargs)


def measure_decode(s: Shapes, models: dict, settings: RunSettings, log) -> dict:
    """Decode tokens/s at each `s.decode_batches` size, dynamic cache (eager) vs static cache + `torch.compile`
    (transformers' own compiled decoding step, `CompileConfig` forced on for CPU).

    One `generate` call per repeat and configuration, interleaved; a `TokenClock` stamps every step, so
    tokens/s = batch × (N − 1) / (last stamp − first stamp) excludes the prefill and the set-up. The first call per
    configuration compiles (its wall time is reported as `first_call_s`) and is not timed.
    """
    torch = _torch()
    torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    new_tokens = settings.decode_tokens or s.decode_new_tokens
    results: dict = {"new_tokens": new_tokens}
    for batch_size in s.decode_batches:
        jobs, meta, clocks = {}, {}, {}
        for label, (spec, model) in models.items():
            if spec.projector == "ian" and (not spec.itdm or spec.queries != s.queries[0]):
                continue  # decoding depends on Q only through the cache length: LLaVA vs the headline MAGE
            model.eval()
            batch = make_batch(s, spec, 2, batch_size, settings, prompt=True)
            for mode, static in (("eager_dynamic", False), ("static_compiled", True)):
                start = time.perf_counter()
                with torch.inference_mode():
                    out = _generate(model, batch, new_tokens, static, settings.compile_backend)
                meta[(label, mode)] = {"first_call_s": time.perf_counter() - start,
                                       "generated": int(out.shape[1] - batch["input_ids"].shape[1])}
                clocks[(label, mode)] = []

                def job(model=model, batch=batch, static=static, key=(label, mode), clocks=clocks):
                    clock = TokenClock(settings.device)
                    with torch.inference_mode():
                        _generate(model, batch, new_tokens, static, settings.compile_backend, clock)
                    clocks[key].append(clock.stamps)

                jobs[(label, mode)] = job
        interleaved(jobs, settings.repeats, 0, settings.device)
        rows: dict = {}
        for (label, mode), runs in clocks.items():
            per_token = [(stamps[-1] - stamps[0]) / (len(stamps) - 1) for stamps in runs if len(stamps) > 1]
            step = statistics.median(per_token)
            rows.setdefault(label, {})[mode] = {
                "tokens_per_s": batch_size / step,
                "ms_per_step": 1000 * step,
                "ms_per_step_all": [round(1000 * t, 3) for t in per_token],
                **meta[(label, mode)],
            }
        for entry in rows.values():
            entry["static_compiled_speedup"] = (
                entry["static_compiled"]["tokens_per_s"] / entry["eager_dynamic"]["tokens_per_s"])
        results[f"bs{batch_size}"] = rows
        log(f"  decode bs{batch_size}: " + ", ".join(
            f"{k} eager {v['eager_dynamic']['tokens_per_s']:.0f} / static+compile "
            f"{v['static_compiled']['tokens_per_s']:.0f} tok/s" for k, v in rows.items()))
    return results


# ---------------------------------------------------------------------------------------------- machine balance
def measure_machine(s: Shapes, settings: RunSettings, log, repeats: int = 7) -> dict:
    """This machine's matrix-multiply rate and memory bandwidth, measured on plain tensors (neither model is
    involved): the inputs of the analytical *time* model (`benchmarks.flops.Machine`), never fitted to the models'
    measured ratios.

    GEMM rate: the LM's matrix products at LLaVA's stage-2 token count (batch × (patches + text) rows) — MLP up
    projection, LM head, and a weight gradient (`Xᵀ·G`) — total FLOPs / total time, median of `repeats`.
    Bandwidth: `torch.add(x, y, out=z)` on 2²⁴-element tensors (far beyond the caches), 3 tensors moved per pass.
    """
    torch = _torch()
    dtype, device = _dtype(settings.dtype), settings.device
    rows = s.batch_size * (s.num_patches + s.stage2_text_tokens)
    d, f, v = s.lm_hidden, s.lm_mlp, s.vocab_size
    x, w_up, w_head = (torch.randn(rows, d, dtype=dtype, device=device), torch.randn(d, f, dtype=dtype, device=device),
                       torch.randn(d, v, dtype=dtype, device=device))
    grad = torch.randn(rows, f, dtype=dtype, device=device)
    out_up, out_head = torch.empty(rows, f, dtype=dtype, device=device), torch.empty(rows, v, dtype=dtype, device=device)
    out_wgrad = torch.empty(d, f, dtype=dtype, device=device)

    def gemms():
        torch.mm(x, w_up, out=out_up)
        torch.mm(x, w_head, out=out_head)
        torch.mm(x.t(), grad, out=out_wgrad)

    gemm_flops = 2 * rows * d * (f + v) + 2 * d * rows * f
    n = 2**24
    a, b, c = (torch.randn(n, dtype=dtype, device=device) for _ in range(3))
    with torch.no_grad():
        gemms()
        torch.add(a, b, out=c)
        gemm_s = statistics.median(timed(gemms, device) for _ in range(repeats))
        add_s = statistics.median(timed(lambda: torch.add(a, b, out=c), device) for _ in range(repeats))
    result = {
        "gemm_flop_per_s": gemm_flops / gemm_s,
        "gemm_shapes": [[rows, d, f], [rows, d, v], [d, rows, f]],
        "bandwidth_bytes_per_s": 3 * n * a.element_size() / add_s,
        "bandwidth_elements": n,
    }
    result["balance_flop_per_byte"] = result["gemm_flop_per_s"] / result["bandwidth_bytes_per_s"]
    log(f"  machine: GEMM {result['gemm_flop_per_s'] / 1e9:.1f} GFLOP/s, element-wise "
        f"{result['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s ({result['balance_flop_per_byte']:.1f} FLOP/byte)")
    return result


# ------------------------------------------------------------------------------------------------- data pipeline
def build_pipeline_dataset(s: Shapes, folder: Path, queries: int, rows: int = 64):
    """LLaVA-format stage-2 data on disk (640×480 JPEG photos-like images, one or two turns) read through the
    project's own `LlavaDataset` (vicuna_v1 template, masking) with a 224-px CLIP image processor."""
    import numpy as np
    from PIL import Image
    from transformers import CLIPImageProcessor

    from mage_cli.tiny import train_tokenizer
    from processing_mage import MageProcessor
    from training.data import build_dataset

    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    questions = ["What is the man holding in his left hand?", "Describe the scene in detail.",
                 "How many people are visible, and what are they doing?"]
    answers = ["He is holding a red umbrella while crossing the street in the rain.",
               "A busy market with stalls of fruit, people walking and a bicycle leaning on a wall.",
               "Three people: two are talking near the door and one is reading a newspaper."]
    data = []
    for index in range(rows):
        pixels = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        pixels[::2] = pixels[::2] // 2  # some structure so JPEG is not pure noise
        Image.fromarray(pixels).save(folder / "images" / f"{index:04d}.jpg", quality=90)
        turns = [{"from": "human", "value": "<image>\n" + questions[index % 3]},
                 {"from": "gpt", "value": answers[index % 3]}]
        if index % 2:
            turns += [{"from": "human", "value": questions[(index + 1) % 3]},
                      {"from": "gpt", "value": answers[(index + 1) % 3]}]
        data.append({"id": f"row{index}", "image": f"{index:04d}.jpg", "conversations": turns})
    path = folder / "data.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    tokenizer = train_tokenizer(questions + answers, vocab_size=400)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": s.image_size}, crop_size={"height": s.image_size, "width": s.image_size})
    processor = MageProcessor(image_processor, tokenizer, num_image_tokens=queries)
    return build_dataset(path, processor, "vicuna_v1", max_length=s.max_positions, image_folder=folder / "images")


def measure_data_pipeline(s: Shapes, settings: RunSettings, step_rates: dict, log, rows: int = 64) -> dict:
    """Samples/s of image decoding + processing + tokenisation + masking + collation through a `DataLoader`
    with 0 and 2 workers, next to the training step rates."""
    torch = _torch()
    from training.collator import MageDataCollator

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        dataset = build_pipeline_dataset(s, Path(tmp), s.queries[0], rows)
        collator = MageDataCollator.from_processor(dataset.processor)
        for workers in (0, 2):
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=s.batch_size, collate_fn=collator, num_workers=workers,
                persistent_workers=False, shuffle=False)
            start = time.perf_counter()
            iterator = iter(loader)
            first = next(iterator)  # worker start-up is excluded from the rate
            ready = time.perf_counter()
            count = 0
            for batch in iterator:
                count += int(batch["input_ids"].shape[0])
            elapsed = time.perf_counter() - ready
            results[f"workers{workers}"] = {
                "samples_per_s": count / elapsed if elapsed > 0 else float("inf"),
                "startup_s": ready - start,
                "batch_keys": sorted(first),
            }
    for label, rate in step_rates.items():
        results.setdefault("vs_stage2_step_rate", {})[label] = {
            f"workers{w}": results[f"workers{w}"]["samples_per_s"] / rate for w in (0, 2)}
    log("  data pipeline: " + ", ".join(f"{k} {v['samples_per_s']:.1f} samples/s"
                                       for k, v in results.items() if k.startswith("workers")))
    return results


# ---------------------------------------------------------------------------------------------- memory workers
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
    torch = _torch()
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
        entry = {"peak_rss": _peak_rss_bytes(), "rss_before": rss_before, "step_s": seconds,
                 "trainable_params": sum(p.numel() for p in trainee.params)}
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

    kwargs = {"dtype": _dtype(settings.dtype)}
    if quantized:
        compute = _dtype(settings.dtype)
        kwargs.update(quantization_config=quantization_config(compute), device_map=settings.device)
    if spec.projector == "llava":
        from transformers import LlavaForConditionalGeneration as cls
    else:
        from modeling_mage import MageForConditionalGeneration as cls
    model = cls.from_pretrained(path, **kwargs)
    if not quantized:
        model = model.to(settings.device)
    return apply_lora(model, r=s.lora_rank, alpha=2 * s.lora_rank, dropout=0.0, quantized=quantized,
                      gradient_checkpointing=settings.gradient_checkpointing)


def run_worker(job: dict, timeout: float = 3600) -> dict:
    """Run `worker_main(job)` in a fresh Python process; errors come back as `{"error": ...}`."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(job, handle)
        job_path = handle.name
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.perf", "--worker", job_path], cwd=root, env=env,
                              capture_output=True, text=True, timeout=timeout)
    finally:
        os.unlink(job_path)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("PERF_WORKER_RESULT "):
            return json.loads(line[len("PERF_WORKER_RESULT "):])
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
        log(f"  memory {label}: stage-2 peak RSS {entry['stage2_peak_rss_mib']:.0f} MiB "
            f"(step delta {entry['stage2_step_delta_mib']:.0f} MiB)")
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
                    pair["qlora"]["weights_footprint_mib"] / pair["lora"]["weights_footprint_mib"])
                log(f"  {label}: LoRA peak {pair['lora']['peak_rss_mib']:.0f} MiB, QLoRA "
                    f"{pair['qlora']['peak_rss_mib']:.0f} MiB; step {pair['lora']['step_s_median']:.2f} s vs "
                    f"{pair['qlora']['step_s_median']:.2f} s")
    return results


# --------------------------------------------------------------------------------------------------- comparison
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
                k: v[mode]["tokens_per_s"] / rows[llava][mode]["tokens_per_s"] for k, v in rows.items()}
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
            entry[key] = {"predicted": predicted, "measured": value, "rel_error": relative_error(predicted, value),
                          "matmul_only": prediction.matmul_only[field_name]}
            if prediction.time_model:
                time_model = prediction.time_model[field_name]
                entry[key].update(time_model=time_model, time_model_rel_error=relative_error(time_model, value))
        entry["ian_share_stage2_predicted"] = prediction.ian_share_stage2
        rows[label] = entry
    return rows


def environment(settings: RunSettings) -> dict:
    """CPU model, cores, versions and date: stored with every result."""
    torch = _torch()
    import transformers

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__}
    for name in ("peft", "bitsandbytes", "accelerate"):
        with contextlib.suppress(Exception):
            versions[name] = __import__(name).__version__
    info = {
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": os.getloadavg(),
        "platform": platform.platform(),
        "versions": versions,
        "device": settings.device,
        "dtype": settings.dtype,
    }
    if settings.device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    info.update(git_state())
    return info


def git_state() -> dict:
    """The commit the measured code comes from, and whether the model/benchmark code differed from it."""
    root = Path(__file__).resolve().parent.parent
    state: dict = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            state["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--", "modeling_mage", "benchmarks/flops.py",
                                    "benchmarks/perf.py", "training"], cwd=root, capture_output=True, text=True,
                                   timeout=10)
            state["git_uncommitted_model_or_benchmark_files"] = [line[3:] for line in dirty.stdout.splitlines()]
    return state


# --------------------------------------------------------------------------------------------------------- report
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
            row(f"{stage} minor page faults per step", {k: v.get("minor_faults_per_step")
                                                         for k, v in training[stage].items()}, 0)
    memory = results.get("memory", {})
    for key, name in (("stage1_peak_rss_mib", "stage1 peak RSS MiB"), ("stage2_peak_rss_mib", "stage2 peak RSS MiB"),
                      ("stage2_step_delta_mib", "stage2 step memory MiB (peak − after build)"),
                      ("stage2_cuda_peak_mib", "stage2 CUDA peak MiB")):
        values = {k: v.get(key) for k, v in memory.items() if isinstance(v, dict)}
        if any(v is not None for v in values.values()):
            row(name, values, 0, f"{key}_ratio" if f"{key}_ratio" in ratios else None)
    share = results.get("projector_share", {})
    if share:
        row("projector % of stage-2 step (fwd+bwd, timed in the step)", {k: 100 * v["share"] for k, v in share.items()}, 1)
        row("projector % of step forward (profiler)",
            {k: 100 * v["forward_share_profiler"] for k, v in share.items()}, 1)
    if "prefill" in results:
        row("prefill latency ms (bs 1)", {k: v["latency_ms"] for k, v in results["prefill"].items()}, 1,
            "prefill_speedup")
    for bs, rows_ in results.get("decode", {}).items():
        if not isinstance(rows_, dict):
            continue
        row(f"decode tok/s {bs} eager dynamic cache", {k: v["eager_dynamic"]["tokens_per_s"] for k, v in rows_.items()},
            1, f"decode_{bs}_eager_dynamic_speedup")
        row(f"decode tok/s {bs} static cache + compile",
            {k: v["static_compiled"]["tokens_per_s"] for k, v in rows_.items()}, 1,
            f"decode_{bs}_static_compiled_speedup")
    lora = results.get("lora", {})
    for kind in ("lora", "qlora"):
        values = {k: v.get(kind, {}).get("step_s_median") for k, v in lora.items()}
        if any(v is not None for v in values.values()):
            row(f"{kind.upper()} stage-2 step s", values, 2)
            row(f"{kind.upper()} peak RSS MiB", {k: v.get(kind, {}).get("peak_rss_mib") for k, v in lora.items()}, 0)
            row(f"{kind.upper()} weights MiB (get_memory_footprint)",
                {k: v.get(kind, {}).get("weights_footprint_mib") for k, v in lora.items()}, 0)
    lines.append("")
    lines.append("Ratios in brackets are against LLaVA from the same run (speed: > 1 = MAGE faster; memory: < 1 = "
                 "MAGE smaller); training and prefill ratios are paired per interleaved round (median of LLaVA time / "
                 "MAGE time). `-noITDM` = the MAGE step without its ITDM text forward.")
    pipeline = results.get("data_pipeline")
    if pipeline:
        lines += ["", "## Data pipeline (decode JPEG + CLIP processing + tokenise/mask + collate)", "",
                  "| workers | samples/s | × MAGE stage-2 step rate | × LLaVA stage-2 step rate |", "|---|---|---|---|"]
        versus = pipeline.get("vs_stage2_step_rate", {})
        head = f"MAGE-{s.queries[0]}"
        for workers in (0, 2):
            key = f"workers{workers}"
            lines.append(f"| {workers} | {_fmt(pipeline[key]['samples_per_s'], 1)} | "
                         f"{_fmt(versus.get(head, {}).get(key), 1)} | {_fmt(versus.get(llava, {}).get(key), 1)} |")
    comparison = results.get("model_vs_measured", {})
    if comparison:
        machine = results.get("machine", {})
        lines += ["", "## Analytical model vs measurement (MAGE/LLaVA ratios)", "",
                  "FLOP model = matrix-multiply + element-wise FLOPs (time ∝ FLOPs); time model = matmul FLOPs at the "
                  "measured GEMM rate + element-wise traffic at the measured bandwidth"
                  + (f" ({machine['gemm_flop_per_s'] / 1e9:.1f} GFLOP/s, {machine['bandwidth_bytes_per_s'] / 1e9:.1f}"
                     " GB/s, benchmarks.perf.measure_machine)" if "gemm_flop_per_s" in machine else "") + ".", "",
                  "| model | quantity | matmul FLOPs only | FLOP model | time model | measured | FLOP-model error | "
                  "time-model error |", "|---|---|---|---|---|---|---|---|"]
        for label, entry in comparison.items():
            for key, value in entry.items():
                if isinstance(value, dict):
                    lines.append(
                        f"| {label} | {key} | {_fmt(value.get('matmul_only'))} | {value['predicted']:.2f} | "
                        f"{_fmt(value.get('time_model'))} | {value['measured']:.2f} | "
                        f"{100 * value['rel_error']:.0f} % | {_pct(value.get('time_model_rel_error'))} |")
    targets = results.get("targets")
    if targets:
        lines += ["", "## Targets", "", "| target | value | met |", "|---|---|---|"]
        for name, entry in targets.items():
            lines.append(f"| {name} | {entry['value']} | {'yes' if entry['met'] else 'NO'} |")
    lines += ["", "## Predictions at the paper's shapes (analytical model, not measured)", "",
              "| shapes | MAGE-Q | stage-1 speedup | stage-2 speedup | stage-2 w/o ITDM | prefill speedup | "
              "IAN share | KV-cache ratio | predicted H100 stage-2 samples/s (7B anchor) | QLoRA (r = 128) peak GiB MAGE / "
              "LLaVA |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for entry in results.get("predictions_paper_shapes", []):
        lines.append(
            f"| {entry['shapes']} | {entry['queries']} | {entry['stage1_speedup']:.2f} | {entry['stage2_speedup']:.2f} | "
            f"{entry['stage2_speedup_without_itdm']:.2f} | {entry['prefill_speedup']:.2f} | "
            f"{100 * entry['ian_share_stage2']:.1f} % | {entry['kv_cache_ratio']:.2f} | "
            f"{_fmt(entry['anchored_stage2_samples_per_s'], 1)} | "
            f"{entry.get('qlora_peak_gib', float('nan')):.1f} / {entry.get('llava_qlora_peak_gib', float('nan')):.1f} |")
    lines.append("")
    lines.append(f"H100 anchors (DESIGN §6, LLaVA-576-7B): {H100_ANCHORS}; GPU targets: {GPU_TARGETS}.")
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
        targets["data pipeline ≥ 5× step rate (2 workers)"] = {"value": round(pipeline["workers2"], 1),
                                                              "met": pipeline["workers2"] >= 5}
    qlora = results.get("lora", {}).get(head, {}).get("qlora_over_lora_peak")
    if qlora is not None:
        targets["QLoRA peak clearly below LoRA (< 0.9×)"] = {"value": round(qlora, 2), "met": qlora < 0.9}
    speedups = [v for entry in results.get("model_vs_measured", {}).values()
                for k, v in entry.items() if isinstance(v, dict) and k in ("stage2_speedup", "stage1_speedup")]
    if speedups:
        worst = max(v["rel_error"] for v in speedups)
        targets["analytical FLOP model within 15 % (stage 1/2 speedups)"] = {"value": f"max {100 * worst:.0f} %",
                                                                             "met": worst <= 0.15}
        prefill = [v["rel_error"] for entry in results.get("model_vs_measured", {}).values()
                   for k, v in entry.items() if isinstance(v, dict) and k == "prefill_speedup"]
        if prefill:
            targets["analytical FLOP model within 15 % (prefill speedups)"] = {
                "value": f"max {100 * max(prefill):.0f} %", "met": max(prefill) <= 0.15}
        timed_errors = [v["time_model_rel_error"] for v in speedups if "time_model_rel_error" in v]
        if timed_errors:
            worst = max(timed_errors)
            targets["analytical time model within 15 % (stage 1/2 speedups)"] = {
                "value": f"max {100 * worst:.0f} %", "met": worst <= 0.15}
    return targets


# ------------------------------------------------------------------------------------------------------------ run
def settings_for(args: argparse.Namespace) -> RunSettings:
    cuda = args.device.startswith("cuda")
    settings = RunSettings(
        device=args.device,
        dtype=args.dtype or ("bfloat16" if cuda else "float32"),
        repeats=args.repeats or (2 if args.quick else 5),
        steps=1,
        warmup=1 if args.quick else 2,
        gradient_checkpointing=cuda if args.gradient_checkpointing is None else args.gradient_checkpointing,
        compile_backend=args.compile_backend,
        decode_tokens=args.decode_tokens,
        memory=not args.skip_memory,
        lora=not args.skip_lora,
        threads=args.threads,
        allocator=args.allocator,
        quick=args.quick,
    )
    return settings


def run_benchmark(shapes: Shapes, settings: RunSettings, command: str = "", log=print, parts: set | None = None) -> dict:
    """Build every model once and run every measurement; returns the JSON-able results."""
    torch = _torch()
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
    results: dict = {"command": command, "shapes": shapes.to_dict(), "settings": vars(settings),
                     "environment": {**environment(settings), **allocator}}
    results["parameters"] = {label: sum(p.numel() for p in m.parameters()) for label, (_s, m) in models.items()}
    results["training"] = measure_training(shapes, models, settings, log)
    rates = {k: v["samples_per_s"] for k, v in results["training"]["stage2"].items()
             if k in (llava_label, f"MAGE-{shapes.queries[0]}")}
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
    """7B / 13B predictions (bf16, gradient checkpointing); DESIGN §6's LLaVA-576-7B H100 anchor applied at 7B."""
    rows = []
    for name in ("7b", "13b"):
        s = SHAPES[name]
        for q in s.queries:
            p = predict(s, q, Precision(2, 2, 2, 8), checkpointing=True)
            entry = {k: v for k, v in vars(p).items() if k != "flops"}
            # DESIGN §6's anchors are LLaVA-576-**7B** figures: an absolute 13B figure would need a 13B anchor
            entry["anchored_stage2_samples_per_s"] = (predict_anchored(s, q)["stage2_samples_per_s"]
                                                      if name == "7b" else None)
            entry["qlora_peak_gib"] = qlora_memory_bytes(s, ModelSpec("ian", q))["total"] / 2**30
            entry["llava_qlora_peak_gib"] = qlora_memory_bytes(s, ModelSpec("llava"))["total"] / 2**30
            rows.append(entry)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="small", help="size setting (benchmarks/flops.py)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (the test suite's smoke run)")
    parser.add_argument("--repeats", type=int, default=0, help="interleaved repeats per measurement")
    parser.add_argument("--decode-tokens", type=int, default=None, help="new tokens per decode measurement")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend for the static decode")
    ckpt = parser.add_mutually_exclusive_group()
    ckpt.add_argument("--gradient-checkpointing", dest="gradient_checkpointing", action="store_true", default=None)
    ckpt.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    parser.add_argument("--skip-memory", action="store_true", help="no per-configuration memory subprocesses")
    parser.add_argument("--skip-lora", action="store_true", help="no LoRA / QLoRA measurement")
    parser.add_argument("--parts", default="training,machine,share,prefill,decode,pipeline,memory,lora",
                        help="comma-separated measurements to run (training always runs)")
    parser.add_argument("--allocator", choices=["retain", "default"], default="retain",
                        help="CPU: 'retain' keeps freed memory in the process heap (glibc mallopt; no per-step page "
                             "faults), 'default' leaves glibc's mmap/trim behaviour (see configure_allocator)")
    parser.add_argument("--output", default=None,
                        help="JSON path (a .md table is written next to it); default "
                             "benchmarks/results/perf_<shapes>_<device>.json")
    parser.add_argument("--report", default=None, metavar="JSON",
                        help="re-derive ratios, model comparison, targets and the .md table from a results JSON")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.worker:
        job = json.loads(Path(args.worker).read_text())
        with contextlib.redirect_stdout(io.StringIO()):
            report = worker_main(job)
        print("PERF_WORKER_RESULT " + json.dumps(report))
        return 0
    if args.report:
        path = Path(args.report)
        results = rederive(json.loads(path.read_text()))
        results["output"] = {"json": _display_path(path), "markdown": _display_path(path.with_suffix(".md"))}
        path.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
        path.with_suffix(".md").write_text(markdown_report(results), encoding="utf-8")
        print(markdown_report(results))
        return 0
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
            return 2
    shapes = SHAPES[args.shapes]
    settings = settings_for(args)
    command = "python -m benchmarks.perf " + " ".join(sys.argv[1:])

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    output = Path(args.output) if args.output else default_output(args.shapes, args.device)
    results = run_benchmark(shapes, settings, command=command, log=log, parts=parts)
    results["output"] = {"json": _display_path(output), "markdown": _display_path(output.with_suffix(".md"))}
    report = markdown_report(results)
    print(report)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    output.with_suffix(".md").write_text(report, encoding="utf-8")
    log(f"wrote {output} and {output.with_suffix('.md')}")
    return 0


def default_output(shapes: str, device: str) -> Path:
    """`benchmarks/results/perf_<shapes>_<device>.json` (`cuda:1` → `cuda`)."""
    return RESULTS_DIR / f"perf_{shapes}_{device.split(':')[0]}.json"


def _display_path(path: Path) -> str:
    """The path as recorded in the results: relative to the repository root when inside it, else absolute."""
    resolved = path.resolve()
    root = RESULTS_DIR.parent.parent
    with contextlib.suppress(ValueError):
        return str(resolved.relative_to(root))
    return str(resolved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = ["run_benchmark", "markdown_report", "main", "add_arguments", "run", "RunSettings", "model_specs",
           "build_model", "make_batch", "worker_main"]
