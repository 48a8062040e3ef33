#!/usr/bin/env bash
# Start a private one-node SLURM cluster on 127.0.0.1 for the tests (Debian, as root, no systemd).
# Installs slurmctld, slurmd, the client tools and munge when missing (exit 3 when that needs
# apt-get and there is none); installing them is the only change made outside SLURM_BASE:
# the system configuration, munge state and logs are left alone, so a SLURM already set up on
# the machine keeps working. Everything lives in SLURM_BASE (default /tmp/dls-slurm; keep it
# short, munged's socket path must stay under 108 bytes): slurm.conf (daemons take -f, clients
# read SLURM_CONF), a munged of its own (key, socket, pid, log, seed), state, spool, logs and
# pid files. Ports SLURMCTLD_PORT/SLURMD_PORT (default 16817/16818), not the system's 6817/6818.
# Waits until the node is idle; the last line printed, also in $SLURM_BASE/env, is
# `export SLURM_CONF=...`. Safe to run twice. stop-slurm.sh stops what this script started.
set -euo pipefail

BASE=${SLURM_BASE:-/tmp/dls-slurm}
RUN=$BASE/run
SOCKET=$BASE/munge/munge.socket
CONF=$BASE/slurm.conf
CTLD_PORT=${SLURMCTLD_PORT:-16817}
SLURMD_PORT=${SLURMD_PORT:-16818}
say() { echo "[start-slurm] $*"; }
fail() { echo "[start-slurm] $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (apt-get and the daemons)"
case $BASE in /*) ;; *) fail "SLURM_BASE must be an absolute path" ;; esac
[ ${#SOCKET} -lt 100 ] || fail "SLURM_BASE is too long for munged's socket path"
# root daemons write here: refuse a directory someone else planted in /tmp
if [ -L "$BASE" ] || { [ -e "$BASE" ] && [ "$(stat -c %u "$BASE")" != 0 ]; }; then
  fail "$BASE is a symlink or not owned by root"
fi
mkdir -p "$BASE" && chmod 0755 "$BASE"   # munged wants its socket directory searchable
mkdir -p "$BASE/state" "$BASE/spool" "$BASE/log" "$BASE/munge" "$RUN"
export SLURM_CONF=$CONF
running() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

packages="slurmctld slurmd slurm-client munge"
missing=$(for p in $packages; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
if [ -n "$missing" ]; then
  command -v apt-get >/dev/null || { echo "[start-slurm] apt-get is needed to install" $missing >&2; exit 3; }
  say "installing" $missing
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $missing >"$BASE/log/apt.log" 2>&1 || {
    apt-get update -q >>"$BASE/log/apt.log" 2>&1
    apt-get install -y -q --no-install-recommends $missing >>"$BASE/log/apt.log" 2>&1 \
      || { tail -20 "$BASE/log/apt.log"; fail "apt-get install failed"; }
  }
fi

# munge authenticates the daemons and the clients to each other: a munged of our own, as root
if ! running "$RUN/munged.pid" munged; then
  [ -s "$BASE/munge/munge.key" ] || (umask 077; dd if=/dev/urandom of="$BASE/munge/munge.key" bs=1 count=1024 status=none)
  say "starting munged"
  # it daemonizes itself and writes its pid file once the socket is up
  /usr/sbin/munged --key-file="$BASE/munge/munge.key" --socket="$SOCKET" --pid-file="$RUN/munged.pid" \
    --log-file="$BASE/log/munged.log" --seed-file="$BASE/munge/munged.seed" </dev/null \
    || fail "munged did not start: $(tail -5 "$BASE/log/munged.log" 2>/dev/null)"
  for _ in $(seq 50); do running "$RUN/munged.pid" munged && break; sleep 0.1; done
fi
munge -S "$SOCKET" -n | unmunge -S "$SOCKET" >/dev/null || fail "munge does not work (see $BASE/log/munged.log)"

host=$(hostname -s)
node=$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]* //; s/ UpTime=.*//')   # CPUs=.. Boards=.. RealMemory=..
if ! running "$RUN/slurmctld.pid" slurmctld; then
  : >"$BASE/plugstack.conf"   # no SPANK plugins, and not the system's
  cat >"$CONF" <<CONF
# written by the dlscaffold tests (tests/slurm/start-slurm.sh): a private cluster
ClusterName=dlscaffold
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# both munge plugins read socket=; a requeued job may start again after cred_expire seconds (min 5)
AuthInfo=cred_expire=10,socket=$SOCKET
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
PlugStackConfig=$BASE/plugstack.conf
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
  port_busy "$CTLD_PORT" && fail "port $CTLD_PORT is in use (set SLURMCTLD_PORT)"
  say "starting slurmctld"
  nohup setsid /usr/sbin/slurmctld -D -f "$CONF" >"$BASE/log/slurmctld.out" 2>&1 </dev/null &
fi
if ! running "$RUN/slurmd.pid" slurmd; then
  port_busy "$SLURMD_PORT" && fail "port $SLURMD_PORT is in use (set SLURMD_PORT)"
  say "starting slurmd"
  nohup setsid /usr/sbin/slurmd -D -f "$CONF" >"$BASE/log/slurmd.out" 2>&1 </dev/null &
fi

ready=""
for _ in $(seq 240); do
  state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -1 || true)
  case "$state" in
    idle|mixed|allocated) ready=$state; break ;;
    down*|drain*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.25
done
[ -n "$ready" ] || { tail -n 20 "$BASE"/log/*.log "$BASE"/log/*.out >&2 || true; fail "node $host did not become idle"; }
# the daemons write their pid files a moment after they answer; stop-slurm.sh needs them
for d in slurmctld slurmd; do
  for _ in $(seq 50); do running "$RUN/$d.pid" "$d" && break; sleep 0.1; done
done
say "node $host is $ready"
printf 'export SLURM_CONF=%q\n' "$CONF" | tee "$BASE/env"
