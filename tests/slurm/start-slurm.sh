#!/usr/bin/env bash
# Start a one-node SLURM cluster on 127.0.0.1 for the tests (Debian, as root, no systemd).
# Installs slurmctld, slurmd, the client tools and munge when missing; waits until the
# node is idle. Safe to run twice. Stop it with stop-slurm.sh, which stops only what this
# script started. SLURM_BASE (default /tmp/dlscaffold-slurm) holds its state and logs.
set -euo pipefail

BASE=${SLURM_BASE:-/tmp/dlscaffold-slurm}
PIDS=$BASE/run
CONF=/etc/slurm/slurm.conf
say() { echo "[start-slurm] $*"; }
fail() { echo "[start-slurm] $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (apt-get and the daemons)"
running() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }

mkdir -p "$BASE/state" "$BASE/spool" "$BASE/log" "$PIDS" /var/log/slurm /etc/slurm

packages="slurmctld slurmd slurm-client munge"
missing=$(for p in $packages; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
if [ -n "$missing" ]; then
  say "installing $missing"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $missing >"$BASE/log/apt.log" 2>&1 || {
    apt-get update -q >>"$BASE/log/apt.log" 2>&1
    apt-get install -y -q --no-install-recommends $missing >>"$BASE/log/apt.log" 2>&1 \
      || { tail -20 "$BASE/log/apt.log"; fail "apt-get install failed"; }
  }
fi

# munge authenticates the daemons to each other
install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge /var/lib/munge
install -d -o munge -g munge -m 0755 /run/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "starting munged"
  setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  cp /run/munge/munged.pid "$PIDS/munged.pid"
fi

host=$(hostname -s)
node=$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]* //; s/ UpTime=.*//')   # CPUs=.. Boards=.. RealMemory=..
if ! running "$PIDS/slurmctld.pid" slurmctld; then
  [ -f "$CONF" ] && ! grep -q "dlscaffold tests" "$CONF" && cp -p "$CONF" "$CONF.before-dlscaffold"
  cat >"$CONF" <<CONF
# written by the dlscaffold tests (tests/slurm/start-slurm.sh)
ClusterName=dlscaffold
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job may start again after this many seconds (minimum 5)
AuthInfo=cred_expire=5
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$PIDS/slurmctld.pid
SlurmdPidFile=$PIDS/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# without these, pending jobs wait for the default scheduling cycles
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
JobRequeue=1
MinJobAge=300
KillWait=10
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  say "starting slurmctld"
  nohup setsid /usr/sbin/slurmctld -D >"$BASE/log/slurmctld.out" 2>&1 </dev/null &
fi
if ! running "$PIDS/slurmd.pid" slurmd; then
  say "starting slurmd"
  nohup setsid /usr/sbin/slurmd -D >"$BASE/log/slurmd.out" 2>&1 </dev/null &
fi

for _ in $(seq 240); do
  state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -1 || true)
  case "$state" in
    idle|mixed|allocated) say "node $host is $state"; exit 0 ;;
    down*|drain*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.25
done
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
fail "node $host did not become idle"
