#!/usr/bin/env bash
# Runs ladder jobs (one per line of a jobs file: the ladder.py flags) two at a time, one torch thread each; the run
# of job line N logs to logs/<jobs file>_N.log.
#   bash experiments/demo_ladder/queue.sh experiments/demo_ladder/jobs_rungs0-3.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
n=$(grep -v '^#' "$1" | grep -c .)
seq 1 "$n" | xargs -P 2 -I{} bash experiments/demo_ladder/run_lines.sh "$1" {}
