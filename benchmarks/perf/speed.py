"""Speed measurements in the timing process: training steps, the projector's share, prefill and decode."""

from __future__ import annotations

import contextlib
import statistics
import time

from benchmarks.flops import Shapes, train_step_flops
from benchmarks.perf.models import make_batch, set_stage, tokens_per_sample
from benchmarks.perf.settings import RunSettings, torch_module
from benchmarks.perf.timing import Trainee, interleaved, loss_of, summarize, synchronize, timed


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
        times = interleaved(
            {k: t.step for k, t in trainees.items()},
            settings.repeats,
            settings.warmup,
            settings.device,
            settings.steps,
            faults=faults,
        )
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
    torch = torch_module()
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

    handles = [
        projector.register_forward_pre_hook(stamp("fwd0")),
        projector.register_forward_hook(stamp("fwd1")),
        projector.register_full_backward_pre_hook(stamp("bwd0")),
    ]
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
    return {
        "share": statistics.median(shares),
        "shares_all": [round(x, 4) for x in shares],
        "forward_s": statistics.median(forward),
        "backward_s": statistics.median(backward),
        "step_s": statistics.median(steps),
    }


_OP_CLASSES = {
    "gemm": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm"),
    "attention": (
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
        "aten::_scaled_dot_product_flash_attention",
        "aten::_scaled_dot_product_flash_attention_backward",
        "aten::_scaled_dot_product_efficient_attention",
        "aten::_scaled_dot_product_efficient_attention_backward",
        "aten::_scaled_dot_product_cudnn_attention",
        "aten::_scaled_dot_product_cudnn_attention_backward",
    ),
    "convolution": (
        "aten::mkldnn_convolution",
        "aten::convolution_backward",
        "aten::_convolution",
        "aten::_slow_conv2d_forward",
        "aten::_slow_conv2d_backward",
        "aten::thnn_conv2d",
    ),
    "loss": (
        "aten::_log_softmax",
        "aten::_log_softmax_backward_data",
        "aten::nll_loss_forward",
        "aten::nll_loss_backward",
    ),
    "optimizer": (
        "aten::_fused_adamw_",
        "aten::_foreach_add_",
        "aten::_foreach_mul_",
        "aten::_foreach_lerp_",
        "aten::_foreach_addcmul_",
        "aten::_foreach_addcdiv_",
        "aten::_foreach_sqrt",
        "aten::_foreach_div_",
    ),
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
        parts = {
            "vision_tower": "model.vision_tower",
            "projector": "model.multi_modal_projector",
            "language_model": "model.language_model",
        }
        if spec.projector == "ian":  # where the IAN's time goes
            parts.update(
                {
                    "ian.vab": "model.multi_modal_projector.vab",
                    "ian.query_cnn": "model.multi_modal_projector.seb.query_cnn",
                    **{f"ian.seb_layer{i}": f"model.multi_modal_projector.seb.layers.{i}" for i in range(s.seb_layers)},
                }
            )
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
            "top_ops": [
                {"op": e.key, "self_cpu_s": round(e.self_cpu_time_total / 1e6, 4), "calls": e.count}
                for e in top
                if not e.key.startswith("mage::")
            ],
        }
        trainee.close()
        log(
            f"  {label}: projector {100 * in_step['share']:.1f}% of a stage-2 step "
            f"(fwd {1000 * in_step['forward_s']:.0f} ms + bwd {1000 * in_step['backward_s']:.0f} ms of "
            f"{1000 * in_step['step_s']:.0f} ms)"
        )
    return results


def measure_prefill(s: Shapes, models: dict, settings: RunSettings, log) -> dict:
    """Prefill latency at batch 1: one forward over the prompt with the cache on, logits for the last token only."""
    torch = torch_module()
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
    results = {
        label: {
            **summarize(t),
            "latency_ms": 1000 * statistics.median(t),
            "prompt_tokens": tokens_per_sample(batches[label]),
        }
        for label, t in times.items()
    }
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
    torch = torch_module()
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
                meta[(label, mode)] = {
                    "first_call_s": time.perf_counter() - start,
                    "generated": int(out.shape[1] - batch["input_ids"].shape[1]),
                }
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
                entry["static_compiled"]["tokens_per_s"] / entry["eager_dynamic"]["tokens_per_s"]
            )
        results[f"bs{batch_size}"] = rows
        log(
            f"  decode bs{batch_size}: "
            + ", ".join(
                f"{k} eager {v['eager_dynamic']['tokens_per_s']:.0f} / static+compile "
                f"{v['static_compiled']['tokens_per_s']:.0f} tok/s"
                for k, v in rows.items()
            )
        )
    return results
