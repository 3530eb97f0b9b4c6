"""Timing core: the training loss and step, interleaved repeats, page faults and the CPU allocator setting."""

from __future__ import annotations

import contextlib
import resource
import statistics
import time

from benchmarks.perf.settings import RunSettings, torch_module


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch_module().cuda.synchronize()


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
        torch = torch_module()
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


def interleaved(
    jobs: dict[str, callable], repeats: int, warmup: int, device: str, steps: int = 1, faults: dict | None = None
) -> dict[str, list]:
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
    return {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "all_s": [round(t, 5) for t in seconds],
    }
