"""This machine's matrix-multiply rate and memory bandwidth: the inputs of the analytical time model."""

from __future__ import annotations

import statistics

from benchmarks.flops import Shapes
from benchmarks.perf.settings import RunSettings, torch_dtype, torch_module
from benchmarks.perf.timing import timed


def measure_machine(s: Shapes, settings: RunSettings, log, repeats: int = 7) -> dict:
    """This machine's matrix-multiply rate and memory bandwidth, measured on plain tensors (neither model is
    involved): the inputs of the analytical *time* model (`benchmarks.flops.Machine`), never fitted to the models'
    measured ratios.

    GEMM rate: the LM's matrix products at LLaVA's stage-2 token count (batch × (patches + text) rows) — MLP up
    projection, LM head, and a weight gradient (`Xᵀ·G`) — total FLOPs / total time, median of `repeats`.
    Bandwidth: `torch.add(x, y, out=z)` on 2²⁴-element tensors (far beyond the caches), 3 tensors moved per pass.
    """
    torch = torch_module()
    dtype, device = torch_dtype(settings.dtype), settings.device
    rows = s.batch_size * (s.num_patches + s.stage2_text_tokens)
    d, f, v = s.lm_hidden, s.lm_mlp, s.vocab_size
    x, w_up, w_head = (
        torch.randn(rows, d, dtype=dtype, device=device),
        torch.randn(d, f, dtype=dtype, device=device),
        torch.randn(d, v, dtype=dtype, device=device),
    )
    grad = torch.randn(rows, f, dtype=dtype, device=device)
    out_up, out_head = (
        torch.empty(rows, f, dtype=dtype, device=device),
        torch.empty(rows, v, dtype=dtype, device=device),
    )
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
    log(
        f"  machine: GEMM {result['gemm_flop_per_s'] / 1e9:.1f} GFLOP/s, element-wise "
        f"{result['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s ({result['balance_flop_per_byte']:.1f} FLOP/byte)"
    )
    return result
