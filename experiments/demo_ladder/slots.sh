#!/usr/bin/env bash
# Like queue.sh, but starts each job only when fewer than 2 ladder runs are on the machine (joins a running queue).
#   bash experiments/demo_ladder/slots.sh experiments/demo_ladder/jobs_gated.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p experiments/demo_ladder/logs
PY=${PYTHON:-.venv/bin/python}
grep -v '^#' "$1" | grep . | while read -r job; do
  while [ "$(pgrep -fc '^[^ ]*python[^ ]* experiments/demo_ladder/ladder.py')" -ge 2 ]; do sleep 15; done
  log="experiments/demo_ladder/logs/$(echo "$job" | tr ' -' '__').log"
  nohup $PY experiments/demo_ladder/ladder.py $job > "$log" 2>&1 &
  sleep 30
done
wait
