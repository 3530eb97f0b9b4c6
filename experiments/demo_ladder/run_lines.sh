#!/usr/bin/env bash
# Runs the given lines (1-based, counting only job lines) of a jobs file one after another, one torch thread:
#   bash experiments/demo_ladder/run_lines.sh experiments/demo_ladder/jobs_demo_stage0.txt 7 9
# (two calls side by side use both cores; each run logs to logs/<jobs file>_<line>.log)
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p experiments/demo_ladder/logs
PY=${PYTHON:-.venv/bin/python}
jobs=$1
shift
for n in "$@"; do
  args=$(grep -v '^#' "$jobs" | grep . | sed -n "${n}p")
  OMP_NUM_THREADS=1 $PY experiments/demo_ladder/ladder.py $args \
    > "experiments/demo_ladder/logs/$(basename "$jobs" .txt)_$n.log" 2>&1
done
