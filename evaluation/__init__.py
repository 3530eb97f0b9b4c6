"""MAGE evaluation: MME, POPE, MMBench (EN/CN, CircularEval), SEED-Bench with official-equivalent scoring.

Cheap to import: the benchmark modules are pure Python; torch/transformers load with `runner` (when a model runs).
`evaluate(...)` (see `evaluation.api`) is the entry point the demo and the CLI call.
"""

from __future__ import annotations

from .api import evaluate, load_benchmark
from .records import BENCHMARKS, BenchmarkFormatError, EvalRecord, LoadedBenchmark

__all__ = ["BENCHMARKS", "BenchmarkFormatError", "EvalRecord", "LoadedBenchmark", "evaluate", "load_benchmark"]
