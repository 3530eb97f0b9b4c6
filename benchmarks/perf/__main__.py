"""`python -m benchmarks.perf`: the benchmark's command line (benchmarks/perf/cli.py)."""

from benchmarks.perf.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
