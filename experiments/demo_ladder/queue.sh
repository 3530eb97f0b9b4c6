#!/usr/bin/env bash
# Runs ladder jobs (one per line of a jobs file: the ladder.py flags) two at a time, one torch thread each.
#   bash experiments/demo_ladder/queue.sh experiments/demo_ladder/jobs_session1.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p experiments/demo_ladder/logs
PY=${PYTHON:-.venv/bin/python}
grep -v '^#' "$1" | grep . | xargs -P 2 -I{} sh -c \
  "$PY experiments/demo_ladder/ladder.py {} > \"experiments/demo_ladder/logs/\$(echo '{}' | tr ' -' '__').log\" 2>&1"
