#!/usr/bin/env bash
# Stop what start-slurm.sh started: cancel the jobs, then the daemons by their pid files.
set -uo pipefail
BASE=${SLURM_BASE:-/tmp/dlscaffold-slurm}
PIDS=$BASE/run
running() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }

if running "$PIDS/slurmctld.pid" slurmctld; then
  jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null
    for _ in $(seq 150); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.1; done
  fi
fi
for daemon in slurmd slurmctld munged; do
  file=$PIDS/$daemon.pid
  running "$file" "$daemon" || { rm -f "$file"; continue; }
  kill -TERM "$(cat "$file")"
  for _ in $(seq 100); do running "$file" "$daemon" || break; sleep 0.1; done
  running "$file" "$daemon" && kill -KILL "$(cat "$file")"
  rm -f "$file"
done
echo "[stop-slurm] stopped"
