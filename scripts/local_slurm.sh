#!/usr/bin/env bash
# A local SLURM cluster on this host, to try the cluster path (hydra/launcher=slurm, requeue, multi-node DDP)
# without one: munged, slurmctld, slurmd for two node entries (n1, n2) that are both this host, one partition.
#   bash scripts/local_slurm.sh start    # installs slurm-wlm and munge (Debian/Ubuntu packages) when missing; as root
#   bash scripts/local_slurm.sh status   # sinfo
#   bash scripts/local_slurm.sh stop     # stops the daemons it started and cancels what is queued
# Starting twice is harmless. It writes /etc/slurm/slurm.conf (where sbatch/sinfo look) and refuses to replace a
# slurm.conf it did not write; it adds the node names to /etc/hosts (127.0.0.1), where a job's processes look up
# the first node of a multi-node job (the DDP rendezvous). No accounting database: sacct is not used by the project (see
# conf/hydra/launcher/slurm.yaml). What it does not prove: GPUs, a shared filesystem, more than one host.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
STATE=/var/spool/local-slurm
LOGS=/var/log/local-slurm
MARK="# written by scripts/local_slurm.sh"
NODES=(n1 n2)
PORT0=${LOCAL_SLURM_PORT:-17001}   # slurmd ports PORT0, PORT0+1; slurmctld on PORT0-1000
CPUS=${LOCAL_SLURM_CPUS:-$(nproc)}
MEM_MB=${LOCAL_SLURM_MEM_MB:-$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)}   # per node entry

say() { echo "[local_slurm] $*"; }
die() { echo "error: $*" >&2; exit 1; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && \
        command -v sbatch >/dev/null && return
    [ "$(id -u)" = 0 ] || die "slurm-wlm/munge are not installed: run this script as root (it apt-get installs them)"
    command -v apt-get >/dev/null || die "no apt-get here: install slurm-wlm and munge with your package manager"
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_conf() {
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script (a real cluster's?): not replacing it"
    fi
    mkdir -p "$STATE/ctld" "$LOGS" /etc/slurm
    local nodes="" i=0
    for n in "${NODES[@]}"; do
        mkdir -p "$STATE/$n"
        nodes+="NodeName=$n NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=$((PORT0 + i)) CPUs=$CPUS"
        nodes+=" RealMemory=$MEM_MB State=UNKNOWN"$'\n'
        i=$((i + 1))
    done
    cat > "$CONF.tmp" <<EOF
$MARK
ClusterName=local
SlurmctldHost=$(hostname)(127.0.0.1)
SlurmctldPort=$((PORT0 - 1000))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd-%n.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd-%n.log
# no cgroups (containers often lack them): processes tracked by parent, no CPU binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGS/jobcomp.log
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=3600
SlurmdTimeout=60
$nodes
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    if ! cmp -s "$CONF.tmp" "$CONF" 2>/dev/null; then
        mv "$CONF.tmp" "$CONF"
        CHANGED=1
    else
        rm -f "$CONF.tmp"
    fi
}

running() {   # running <pid file>
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

add_hosts() {
    local n
    for n in "${NODES[@]}"; do
        getent hosts "$n" >/dev/null || echo "127.0.0.1 $n   # scripts/local_slurm.sh" >> /etc/hosts
    done
}

start_munge() {
    local pid=/run/munge/munged.pid
    running "$pid" && return
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 0755 /run/munge
    [ -f /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; }
    runuser -u munge -- /usr/sbin/munged --pid-file="$pid"
    say "munged started"
}

start() {
    install_packages
    CHANGED=0
    write_conf
    add_hosts
    start_munge
    if [ "$CHANGED" = 1 ]; then stop_daemons; fi   # a changed configuration restarts the daemons
    if ! running "$STATE/slurmctld.pid"; then
        slurmctld -f "$CONF"
        say "slurmctld started"
    fi
    for n in "${NODES[@]}"; do
        if ! running "$STATE/slurmd-$n.pid"; then
            slurmd -f "$CONF" -N "$n"
            say "slurmd $n started"
        fi
    done
    for _ in $(seq 60); do   # until both node entries are up
        if [ "$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -c -E ' (idle|mix|alloc)')" -ge "${#NODES[@]}" ]; then
            sinfo -N
            return
        fi
        sleep 1
    done
    sinfo -N -l || true
    die "the nodes did not come up within 60 s: see $LOGS/"
}

stop_daemons() {
    for f in "$STATE"/slurmd-*.pid "$STATE/slurmctld.pid"; do
        if running "$f"; then
            local pid
            pid=$(cat "$f")
            kill "$pid"
            for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            say "stopped $(basename "$f" .pid)"
        fi
        rm -f "$f"
    done
}

stop() {
    if running "$STATE/slurmctld.pid"; then scancel --full --quiet --user="$(id -un)" 2>/dev/null || true; fi
    stop_daemons
    if running /run/munge/munged.pid; then
        kill "$(cat /run/munge/munged.pid)"
        say "stopped munged"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo -N && squeue ;;
    *) die "usage: bash scripts/local_slurm.sh start|stop|status" ;;
esac
