"""MAGE evaluation: MME, POPE, MMBench (EN/CN, CircularEval), SEED-Bench with official-equivalent scoring.

Cheap to import: the benchmark modules are pure Python; torch/transformers load only in `runner` and `api`.
`evaluate(...)` (see `evaluation.api`) is the entry point the demo and the CLI call.
"""

from __future__ import annotations

from .records import BENCHMARKS, BenchmarkFormatError, EvalRecord, LoadedBenchmark


def __getattr__(name: str):
    if name in ("evaluate", "load_benchmark"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'evaluation' has no attribute {name!r}")


__all__ = ["BENCHMARKS", "BenchmarkFormatError", "EvalRecord", "LoadedBenchmark", "evaluate", "load_benchmark"]
