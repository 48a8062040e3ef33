#!/usr/bin/env bash
# Stop what start-slurm.sh started in SLURM_BASE (default /tmp/dls-slurm): cancel the jobs
# (stopping slurmd does not kill them), then the daemons by the pids in $SLURM_BASE/run,
# checked against /proc/PID/comm, never by name. Touches nothing outside SLURM_BASE and
# leaves the directory itself to the caller.
set -uo pipefail
BASE=${SLURM_BASE:-/tmp/dls-slurm}
RUN=$BASE/run
export SLURM_CONF=$BASE/slurm.conf
running() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }
# alive PID COMM: PID is still process COMM and not a zombie
alive() { [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

if [ -f "$SLURM_CONF" ] && running "$RUN/slurmctld.pid" slurmctld; then
  jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null
    # COMPLETING jobs wait for their processes, up to KillWait=10 s
    for _ in $(seq 300); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.1; done
  fi
fi
for daemon in slurmd slurmctld munged; do
  file=$RUN/$daemon.pid
  running "$file" "$daemon" || { rm -f "$file"; continue; }
  pid=$(cat "$file")
  kill -TERM "$pid"
  # the daemons delete their own pid file on the way out: wait on the pid itself
  for _ in $(seq 100); do alive "$pid" "$daemon" || break; sleep 0.1; done
  alive "$pid" "$daemon" && kill -KILL "$pid"
  rm -f "$file"
done
echo "[stop-slurm] stopped"
