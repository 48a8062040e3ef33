#!/usr/bin/env bash
# start-slurm-2node.sh - start a private MULTI-node (default two-node) SLURM cluster on one Linux
# machine, each node in network namespaces of its own, so that multi-node jobs (srun -N2, torchrun
# across nodes, gloo/NCCL-over-TCP rendezvous) can be tested without a second machine. Run as root
# (Debian 12, Slurm 22.05, no systemd or cgroups needed). Stop with stop-slurm-2node.sh.
# Exits 3 when SLURM is missing and there is no apt-get to install it.
#
# Layout (defaults; P=$SLURM2N_PREFIX=dls2n, S=$SLURM2N_SUBNET=10.231.0):
#   netns P-ctl : bridge br0 = S.1/24, slurmctld (UTS hostname "ctl")  -- the "switch" + controller
#   netns P-n1  : eth0 = S.11/24 (veth to br0), slurmd -N n1 (UTS hostname "n1")
#   netns P-n2  : eth0 = S.12/24 (veth to br0), slurmd -N n2 (UTS hostname "n2")   ...one per node
#   host        : veth P-h = S.254/24 on br0 (SLURM2N_HOST_LINK=1; default 0), so srun/sbatch/squeue/
#                 scontrol on the host reach the controller AND the nodes with SLURM_CONF alone.
#                 With SLURM2N_HOST_LINK=0 the host gets no address at all; use the wrappers in
#                 $BASE/bin instead (they run the real client inside netns P-ctl; the last line
#                 printed then also puts $BASE/bin first on PATH). The host then gets an
#                 "unreachable S.0/24" route while the cluster is up, so an unwrapped client
#                 (/usr/bin/srun with this SLURM_CONF) fails at once instead of sending its packets
#                 out through the default route.
# No namespace has a default route, nothing is NATed or forwarded (the host's ip_forward is not
# touched), IPv6 is not configured on any of these links (addrgenmode none): traffic stays on S.0/24.
# Each daemon also runs in a private mount namespace where $BASE/hosts is bind-mounted on /etc/hosts
# (the real file is not changed; the mount vanishes with the daemon), so "n1", "n2", "ctl" resolve
# inside jobs: torchrun --rdzv_endpoint n1:29500, MASTER_ADDR=n1 and gloo's hostname lookup work.
# One munged (host netns; it only uses a unix socket, and the filesystem is shared) serves all
# daemons through AuthInfo=socket=...; its key, socket, pid file and log are in $BASE/munge.
# proctrack/linuxproc + task/none (no cgroups); $BASE/reap.sh, run as Epilog and TaskEpilog, kills
# job processes that escaped their step's process tree, as proctrack/cgroup would (see below).
# Nothing outside $BASE is written except the namespaces (ip netns: /run/netns/P-*), links (and
# with SLURM2N_HOST_LINK=0 the guard route); the system's SLURM and munge configuration, /run/munge and /var/log are left alone, and ports are private to the
# namespaces, so the one-node start-slurm.sh cluster (127.0.0.1:16817/16818) can run beside it.
# Clients find this cluster through SLURM_CONF: the LAST LINE printed is the exact
# `export SLURM_CONF=...` line to eval; it is also written to $BASE/env (`source` it).
# Jobs inherit SLURM_CONF (sbatch exports the environment), so srun/scontrol requeue inside jobs work.
# Idempotent: re-running only starts what is not running (and rebuilds the network only when no
# daemon of ours runs). Helpers: $BASE/bin/on-node NODE CMD... runs CMD inside a node's net, UTS
# and mount namespaces (as the jobs see them); $BASE/bin/<client> are the netns-wrapped clients.
# Env knobs: SLURM2N_BASE (/tmp/dls2n; keep it short, unix socket paths < 108 bytes),
# SLURM2N_PREFIX (dls2n; netns/link names, <= 10 chars), SLURM2N_SUBNET (10.231.0, a /24),
# SLURM2N_NNODES (2; nodes n1..nN at S.11..), SLURM2N_CPUS (1 per node), SLURM2N_MEM_MB (per node;
# default 90% of MemAvailable / nodes), SLURM2N_CTLD_PORT (17817), SLURM2N_SLURMD_PORT (17818),
# SLURM2N_HOST_LINK (0), SLURM2N_REAP (1: the Epilog/TaskEpilog reaper below), CRED_EXPIRE (10 s:
# delay before a requeued job restarts, min 5), WAIT_SECS (60), SLURM_PKGS, APT_OPTS.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

BASE=${SLURM2N_BASE:-/tmp/dls2n}
P=${SLURM2N_PREFIX:-dls2n}
SUB=${SLURM2N_SUBNET:-10.231.0}
NNODES=${SLURM2N_NNODES:-2}
NCPUS=${SLURM2N_CPUS:-1}
CTLD_PORT=${SLURM2N_CTLD_PORT:-17817}
SLURMD_PORT=${SLURM2N_SLURMD_PORT:-17818}
HOST_LINK=${SLURM2N_HOST_LINK:-0}
REAP=${SLURM2N_REAP:-1}
CRED_EXPIRE=${CRED_EXPIRE:-10}
WAIT_SECS=${WAIT_SECS:-60}
PKGS=${SLURM_PKGS:-"slurmctld slurmd slurm-client munge"}
RUN=$BASE/run
MUNGE=$BASE/munge
SOCKET=$MUNGE/munge.socket
CONF=$BASE/slurm.conf
HOSTS=$BASE/hosts
CTL_NS=$P-ctl
CTL_NAME=ctl
CTL_ADDR=$SUB.1
HOST_ADDR=$SUB.254
HOST_IF=$P-h
NODES=(); for i in $(seq 1 "$NNODES"); do NODES+=("n$i"); done
node_ns() { echo "$P-$1"; }                 # n1 -> dls2n-n1
node_addr() { echo "$SUB.$((10 + ${1#n}))"; } # n1 -> 10.231.0.11

log() { echo "[start-slurm-2node] $*"; }
die() { echo "[start-slurm-2node] ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
case $BASE in /*) ;; *) die "SLURM2N_BASE must be an absolute path" ;; esac
[ ${#SOCKET} -lt 100 ] || die "SLURM2N_BASE is too long for munged's socket path"
[[ $P =~ ^[A-Za-z0-9][A-Za-z0-9_]{0,9}$ ]] || die "SLURM2N_PREFIX must be 1-10 letters/digits/_ (link names are limited to 15 chars)"
[[ $SUB =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "SLURM2N_SUBNET must be three octets, e.g. 10.231.0"
[[ $NNODES =~ ^[0-9]+$ ]] && [ "$NNODES" -ge 1 ] && [ "$NNODES" -le 200 ] || die "SLURM2N_NNODES must be 1..200"
for b in ip nsenter unshare mount hostname setsid; do command -v $b >/dev/null || die "$b missing"; done
# a root daemon writing into /tmp: refuse a base directory someone else planted
if [ -L "$BASE" ] || { [ -e "$BASE" ] && [ "$(stat -c %u "$BASE")" != 0 ]; }; then
  die "$BASE is a symlink or not owned by root"
fi
mkdir -p "$BASE"; chmod 0755 "$BASE"
mkdir -p "$BASE/state" "$RUN" "$BASE/log" "$BASE/bin"
for n in "${NODES[@]}"; do mkdir -p "$BASE/spool/$n"; done
install -d -m 0755 "$MUNGE"          # munged wants its socket directory searchable by all
export SLURM_CONF=$CONF
T0=$(date +%s%N)

# alive PIDFILE COMM -> 0 if the pid in PIDFILE is alive and is process COMM
alive() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}
any_slurm_daemon_alive() {
  alive "$RUN/slurmctld.pid" slurmctld && return 0
  for f in "$RUN"/slurmd-*.pid; do alive "$f" slurmd && return 0; done
  return 1
}
ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx -- "$1"; }
# in_ctl CMD... -> run CMD in the controller's network namespace (works with or without the host link)
in_ctl() { nsenter --net="/run/netns/$CTL_NS" -- "$@"; }

# 1. packages ---------------------------------------------------------------
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  command -v apt-get >/dev/null || { echo "[start-slurm-2node] apt-get is needed to install$missing" >&2; exit 3; }
  log "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >"$BASE/log/apt.log" 2>&1 || true
  apt-get install -y -q --no-install-recommends ${APT_OPTS:-} $missing >>"$BASE/log/apt.log" 2>&1 \
    || { tail -20 "$BASE/log/apt.log"; die "apt-get install failed"; }
fi
for b in munged munge unmunge slurmctld slurmd srun sinfo; do command -v $b >/dev/null || die "$b missing"; done

# 2. munge: one private munged for all daemons (unix socket on the shared filesystem) ---------
if [ ! -s "$MUNGE/munge.key" ]; then
  log "creating munge key"
  rm -f "$MUNGE/munge.key"
  mungekey --create --keyfile="$MUNGE/munge.key" 2>/dev/null \
    || (umask 077; dd if=/dev/urandom of="$MUNGE/munge.key" bs=1 count=1024 status=none)
fi
chmod 0400 "$MUNGE/munge.key"
if alive "$RUN/munged.pid" munged; then
  log "munged already running (pid $(cat "$RUN/munged.pid"))"
else
  log "starting munged"
  rm -f "$RUN/munged.pid"
  # munged daemonizes itself and writes the pid file once its socket is up
  "$(command -v munged)" --key-file="$MUNGE/munge.key" --socket="$SOCKET" --pid-file="$RUN/munged.pid" \
    --log-file="$MUNGE/munged.log" --seed-file="$MUNGE/munged.seed" \
    </dev/null >"$BASE/log/munged.stdout" 2>&1 || { cat "$BASE/log/munged.stdout" >&2; die "munged failed"; }
  for _ in $(seq 1 50); do alive "$RUN/munged.pid" munged && break; sleep 0.1; done
fi
munge -S "$SOCKET" -n | unmunge -S "$SOCKET" >/dev/null || die "munge self-test failed (see $MUNGE/munged.log)"

# 3. network: namespaces, a bridge in the controller's, one veth per node (+ host link) ---------
net_ok() {
  ns_exists "$CTL_NS" || return 1
  ip -n "$CTL_NS" -4 -o addr show dev br0 2>/dev/null | grep -q " $CTL_ADDR/24 " || return 1
  for n in "${NODES[@]}"; do
    ns_exists "$(node_ns $n)" || return 1
    ip -n "$(node_ns $n)" -4 -o addr show dev eth0 2>/dev/null | grep -q " $(node_addr $n)/24 " || return 1
  done
  if [ "$HOST_LINK" = 1 ]; then
    ip -4 -o addr show dev "$HOST_IF" 2>/dev/null | grep -q " $HOST_ADDR/24 " || return 1
  else
    ! ip link show dev "$HOST_IF" >/dev/null 2>&1 || return 1
    [ -f "$RUN/guard-route" ] && ip -4 route show type unreachable "$SUB.0/24" | grep -q . || return 1
  fi
}
teardown_net() {   # only our own names (any node count), and the guard route only if we added it
  ip link show dev "$HOST_IF" >/dev/null 2>&1 && ip link del dev "$HOST_IF"
  if [ -f "$RUN/guard-route" ]; then
    ip route del unreachable "$(cat "$RUN/guard-route")" 2>/dev/null || true; rm -f "$RUN/guard-route"
  fi
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$P-(ctl|n[0-9]+)\$"); do
    ip netns del "$ns"
  done
  return 0
}
if net_ok; then
  log "network namespaces already set up"
else
  any_slurm_daemon_alive && die "network incomplete while daemons of this cluster run: run stop-slurm-2node.sh first"
  # the subnet must not be in use on the host already (other than by our own link)
  if ip -4 -o addr show | grep -v " $HOST_IF " | grep -q " inet $SUB\."; then
    die "subnet $SUB.0/24 is already used by a host interface (set SLURM2N_SUBNET)"
  fi
  teardown_net
  [ -z "$(ip -4 route show "$SUB.0/24")" ] || die "the host already has a route for $SUB.0/24 (set SLURM2N_SUBNET)"
  log "creating namespaces $CTL_NS ${NODES[*]/#/$P-} and links on $SUB.0/24"
  ip netns add "$CTL_NS"
  ip -n "$CTL_NS" link set lo up
  ip -n "$CTL_NS" link add br0 type bridge          # STP off: ports forward at once
  ip -n "$CTL_NS" link set br0 addrgenmode none     # no IPv6 link-local chatter
  ip -n "$CTL_NS" addr add "$CTL_ADDR/24" dev br0
  ip -n "$CTL_NS" link set br0 up
  for n in "${NODES[@]}"; do
    ns=$(node_ns $n)
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$CTL_NS" link add "v-$n" type veth peer name eth0 netns "$ns"
    ip -n "$CTL_NS" link set "v-$n" addrgenmode none
    ip -n "$CTL_NS" link set "v-$n" master br0 up
    ip -n "$ns" link set eth0 addrgenmode none
    ip -n "$ns" addr add "$(node_addr $n)/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
  if [ "$HOST_LINK" = 1 ]; then
    # the host end sits on the same /24 (connected route only; no forwarding, no NAT)
    ip link add "$HOST_IF" type veth peer name v-host netns "$CTL_NS"
    ip link set "$HOST_IF" addrgenmode none
    ip addr add "$HOST_ADDR/24" dev "$HOST_IF"
    ip link set "$HOST_IF" up
    ip -n "$CTL_NS" link set v-host addrgenmode none
    ip -n "$CTL_NS" link set v-host master br0 up
  else
    ip route add unreachable "$SUB.0/24"            # no leaks via the default route (see top)
    echo "$SUB.0/24" >"$RUN/guard-route"
  fi
fi

# hosts file the daemons (and so the jobs) see as /etc/hosts
{
  echo "# generated by start-slurm-2node.sh: bind-mounted on /etc/hosts inside the cluster's namespaces"
  echo "127.0.0.1 localhost"
  echo "::1 localhost ip6-localhost ip6-loopback"
  echo "$CTL_ADDR $CTL_NAME"
  for n in "${NODES[@]}"; do echo "$(node_addr $n) $n"; done
  [ "$HOST_LINK" = 1 ] && echo "$HOST_ADDR $P-host"
  # reverse lookups of IPv4-mapped IPv6 peers (c10d's TCPStore logs "The hostname of the client
  # socket cannot be retrieved" otherwise); distinct names keep forward lookups IPv4-only
  for n in "${NODES[@]}"; do echo "::ffff:$(node_addr $n) $n.v4mapped"; done
} >"$HOSTS.tmp"
mv -f "$HOSTS.tmp" "$HOSTS"     # a bind mount follows the inode: daemons already running keep theirs

# Reaper, used as Epilog (slurmd, when a job ends on a node) and TaskEpilog (slurmstepd, after each
# task of a step exits): it stands in for proctrack/cgroup, which would need the host's cgroup tree.
# proctrack/linuxproc only tracks a step's process TREE, so processes that lost their parent (e.g.
# torchrun workers when the torchrun agent dies of SIGUSR1) escape the step's final SIGKILL: the step
# then hangs on their open stdout, and they outlive the job holding ports such as 29500. Like the
# cgroup plugin, the reaper SIGKILLs, in this node's netns only, the processes whose environment has
# the step's SLURM_JOB_ID+SLURM_STEP_ID once no task of that step runs on the node any more, and at
# job end everything with the job's SLURM_JOB_ID. Bash builtins only (no helper process carries the
# variables). Actions are logged to $BASE/log/reap.log.
cat >"$BASE/reap.sh.tmp" <<'REAPER'
#!/usr/bin/env bash
# generated by start-slurm-2node.sh (see there): Epilog and TaskEpilog that kill what is left of a
# job (Epilog) or of a step whose tasks on this node have all exited (TaskEpilog) on this node.
LOG=@LOG@
J=${SLURM_JOB_ID:-}; [ -n "$J" ] || exit 0
S=""
if [ "${SLURM_SCRIPT_CONTEXT:-}" = epilog_task ]; then
  S=${SLURM_STEP_ID:-}
  case $S in ''|batch|extern|42949672[0-9][0-9]) exit 0 ;; esac   # batch/extern: the Epilog's job
fi
victims=""
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  [ "$pid" = $$ ] && continue
  [ "$d/ns/net" -ef /proc/$$/ns/net ] || continue          # this node's processes only
  hj=0; hs=0; ctx=0
  while IFS= read -r -d '' kv; do
    case $kv in
      "SLURM_JOB_ID=$J") hj=1 ;;
      "SLURM_STEP_ID=$S") hs=1 ;;
      SLURM_SCRIPT_CONTEXT=*) ctx=1 ;;                       # another prolog/epilog
    esac
  done 2>/dev/null <"$d/environ"
  [ $hj = 1 ] && [ $ctx = 0 ] || continue
  if [ -n "$S" ]; then
    [ $hs = 1 ] || continue
    ppid=""
    while read -r k v; do [ "$k" = PPid: ] && { ppid=$v; break; }; done 2>/dev/null <"$d/status"
    pc=""; [ -n "$ppid" ] && read -r pc 2>/dev/null <"/proc/$ppid/comm"
    [ "$pc" = slurmstepd ] && exit 0          # a task of this step still runs here: not its end yet
  fi
  victims="$victims $pid"
done
[ -n "$victims" ] || exit 0
kill -KILL $victims 2>/dev/null
printf '%(%F %T)T %s job %s%s: SIGKILL to leftover pids%s\n' -1 "${SLURMD_NODENAME:-?}" "$J" \
  "${S:+ step $S}" "$victims" >>"$LOG" 2>/dev/null
exit 0
REAPER
sed -i "s|@LOG@|$BASE/log/reap.log|" "$BASE/reap.sh.tmp"
chmod 0755 "$BASE/reap.sh.tmp"
mv -f "$BASE/reap.sh.tmp" "$BASE/reap.sh"     # (re)written atomically: a running epilog keeps its copy

# 4. slurm.conf (private) ------------------------------------------------------
MEM=${SLURM2N_MEM_MB:-$(awk -v n="$NNODES" '/MemAvailable/{printf "%d", $2/1024*0.9/n}' /proc/meminfo)}
[ "$MEM" -gt 256 ] || MEM=256
if alive "$RUN/slurmctld.pid" slurmctld && [ -f "$CONF" ]; then
  log "slurmctld running: leaving $CONF as is"
else
  : >"$BASE/plugstack.conf"                      # no SPANK plugins, and not the system's
  {
  cat <<EOF
# generated by start-slurm-2node.sh: a private ${NNODES}-node cluster in network namespaces, see $BASE/env
ClusterName=dls2n
SlurmctldHost=${CTL_NAME}(${CTL_ADDR})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=${CRED_EXPIRE},socket=${SOCKET}
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
StateSaveLocation=${BASE}/state
SlurmdSpoolDir=${BASE}/spool/%n
SlurmctldPidFile=${RUN}/slurmctld.pid
SlurmdPidFile=${RUN}/slurmd-%n.pid
SlurmctldLogFile=${BASE}/log/slurmctld.log
SlurmdLogFile=${BASE}/log/slurmd-%n.log
PlugStackConfig=${BASE}/plugstack.conf
$( [ "$REAP" = 1 ] && printf 'Epilog=%s\nTaskEpilog=%s\n' "$BASE/reap.sh" "$BASE/reap.sh" )
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
JobRequeue=1
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
EOF
  for n in "${NODES[@]}"; do
    echo "NodeName=$n NodeAddr=$(node_addr $n) NodeHostname=$n CPUs=$NCPUS RealMemory=$MEM State=UNKNOWN"
  done
  echo "PartitionName=debug Nodes=n[1-$NNODES] Default=YES MaxTime=INFINITE State=UP"
  } >"$CONF"
fi

# 5. client wrappers (run the real client inside netns P-ctl unless already in one of ours) -----
for c in srun sbatch salloc squeue scontrol scancel sinfo sattach sstat sacct sprio sbcast; do
  real=$(command -v $c || true); [ -n "$real" ] || continue
  cat >"$BASE/bin/$c.tmp" <<EOF
#!/usr/bin/env bash
# generated by start-slurm-2node.sh: $c for the cluster in $BASE, run in netns $CTL_NS
export SLURM_CONF=\${SLURM_CONF:-$CONF}
self=\$(stat -L -c %i /proc/self/ns/net)
for f in /run/netns/$P-*; do [ "\$(stat -L -c %i "\$f" 2>/dev/null)" = "\$self" ] && exec $real "\$@"; done
exec nsenter --net=/run/netns/$CTL_NS -- $real "\$@"
EOF
  chmod 0755 "$BASE/bin/$c.tmp"; mv -f "$BASE/bin/$c.tmp" "$BASE/bin/$c"
done
cat >"$BASE/bin/on-node" <<EOF
#!/usr/bin/env bash
# generated by start-slurm-2node.sh: on-node NODE [CMD...] - run CMD (default: a shell) in the
# network, UTS and mount namespaces of NODE's slurmd (what jobs on NODE see), e.g. on-node n2 ip addr
n=\${1:?usage: on-node NODE [CMD...]}; shift
pid=\$(cat "$RUN/slurmd-\$n.pid" 2>/dev/null) || { echo "no slurmd for \$n" >&2; exit 1; }
[ \$# -gt 0 ] || set -- bash
exec nsenter -t "\$pid" --net --uts --mount -- "\$@"
EOF
chmod 0755 "$BASE/bin/on-node"

# 6. daemons: each in its netns + a new UTS ns (hostname) + a private mount ns (/etc/hosts) -------
# launch NETNS HOSTNAME OUTFILE CMD... : nsenter/unshare/sh all exec, so CMD keeps the pid
launch() {
  local ns=$1 hn=$2 out=$3; shift 3
  nohup setsid nsenter --net="/run/netns/$ns" -- unshare --uts --mount --propagation private -- \
    sh -c 'hostname "$1" && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"' sh "$hn" "$HOSTS" "$@" \
    >"$out" 2>&1 </dev/null &
}
if alive "$RUN/slurmctld.pid" slurmctld; then
  log "slurmctld already running (pid $(cat "$RUN/slurmctld.pid"))"
else
  log "starting slurmctld in $CTL_NS ($CTL_NAME, $CTL_ADDR:$CTLD_PORT)"
  rm -f "$RUN/slurmctld.pid"
  launch "$CTL_NS" "$CTL_NAME" "$BASE/log/slurmctld.stdout" "$(command -v slurmctld)" -D -f "$CONF"
fi
for n in "${NODES[@]}"; do
  if alive "$RUN/slurmd-$n.pid" slurmd; then
    log "slurmd $n already running (pid $(cat "$RUN/slurmd-$n.pid"))"
  else
    log "starting slurmd $n in $(node_ns $n) ($(node_addr $n):$SLURMD_PORT)"
    rm -f "$RUN/slurmd-$n.pid"
    launch "$(node_ns $n)" "$n" "$BASE/log/slurmd-$n.stdout" "$(command -v slurmd)" -D -f "$CONF" -N "$n"
  fi
done

# 7. wait for all nodes to be idle -----------------------------------------------
deadline=$((SECONDS + WAIT_SECS)); resumed=0; bad=""
while [ $SECONDS -lt $deadline ]; do
  states=$(in_ctl sinfo -h -N -o '%N %T' 2>/dev/null || true)
  bad=""
  for n in "${NODES[@]}"; do
    st=$(echo "$states" | awk -v n="$n" '$1==n{print $2; exit}')
    case "$st" in
      idle|mixed|allocated|completing) ;;
      drain*|down*|fail*)
        bad="$bad $n=$st"
        if [ $resumed = 0 ]; then in_ctl scontrol update NodeName="$n" State=RESUME 2>/dev/null || true; fi ;;
      *) bad="$bad $n=${st:-?}" ;;
    esac
  done
  [ -z "$bad" ] && break
  case "$bad" in *drain*|*down*|*fail*) resumed=1 ;; esac
  sleep 0.25
done
if [ -n "$bad" ]; then
  tail -n 20 "$BASE"/log/*.log "$BASE"/log/*.stdout >&2 || true
  die "nodes not ready after ${WAIT_SECS}s:$bad"
fi
for _ in $(seq 1 20); do alive "$RUN/slurmctld.pid" slurmctld && break; sleep 0.1; done
if [ "$HOST_LINK" = 1 ]; then
  sinfo -h >/dev/null 2>&1 || die "nodes are up but the host cannot reach slurmctld at $CTL_ADDR:$CTLD_PORT"
fi
pids="munged $(cat "$RUN/munged.pid" 2>/dev/null), slurmctld $(cat "$RUN/slurmctld.pid" 2>/dev/null)"
for n in "${NODES[@]}"; do pids="$pids, slurmd-$n $(cat "$RUN/slurmd-$n.pid" 2>/dev/null)"; done
ms=$(( ($(date +%s%N) - T0) / 1000000 ))
log "ready in $((ms / 1000)).$(printf %03d $((ms % 1000))) s: ${NODES[*]} ($pids)"
in_ctl sinfo -N -o '%N %T %c %m %o'
if [ "$HOST_LINK" = 1 ]; then
  log "host clients reach the cluster over $HOST_IF ($HOST_ADDR); wrappers also in $BASE/bin"
  line=$(printf 'export SLURM_CONF=%q' "$CONF")
else
  log "no host link: use the wrapped clients in $BASE/bin (put first on PATH below)"
  line=$(printf 'export SLURM_CONF=%q PATH=%q:"$PATH"' "$CONF" "$BASE/bin")
fi
printf '%s\n' "$line" >"$BASE/env"
echo "$line"
