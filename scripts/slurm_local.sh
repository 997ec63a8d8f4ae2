#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for tests/test_slurm.py and
# benchmarks/slurm_overhead.py. Idempotent: installs the Debian packages if missing, writes
# /etc/slurm/{slurm,gres}.conf, starts munged, slurmctld and slurmd if they are not running
# (restarts them if the config changed) and waits until the node is idle.
# Needs root and Debian/Ubuntu (apt). Exit status 3 = cannot run here (the tests skip on it).
# The node offers one fake GPU as GRES (File=/dev/null): `--gpus=1` jobs are accepted and
# run on the CPU. Finished jobs are recorded by jobcomp/filetxt in $JOBCOMP (no slurmdbd) and
# stay visible to squeue/scontrol for an hour (MinJobAge), with their GRES. Memory is enforced
# as on a real cluster: a job whose processes use more than its --mem is killed within a
# second (jobacct_gather polling + OverMemoryKill; containers here have no cgroup controller).
set -euo pipefail

PARTITION=main
JOBCOMP=/var/log/slurm/jobcomp.log
WAIT=${SLURM_LOCAL_WAIT:-90}   # seconds to wait for each daemon and for the idle node
NICE=${SLURM_LOCAL_NICE:-0}    # niceness of slurmd, inherited by every job (shared machines: 10)

say() { echo "[slurm_local] $*"; }
cannot() { echo "[slurm_local] cannot start a local SLURM cluster: $*" >&2; exit 3; }

[ "$(id -u)" -eq 0 ] || cannot "needs root (apt-get and the daemons); run it as root"
command -v apt-get >/dev/null || cannot "needs apt-get (Debian/Ubuntu)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurmctld slurmd slurm-client munge"
  export DEBIAN_FRONTEND=noninteractive
  timeout -k 10 600 apt-get update -qq || cannot "apt-get update failed"
  timeout -k 10 600 apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null || cannot "apt-get install failed"
fi

# ---- munge (authentication between the daemons and the clients) ----
[ -s /etc/munge/munge.key ] || { mungekey --create --force && chown munge:munge /etc/munge/munge.key; }
mkdir -p /run/munge && chown munge:munge /run/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "starting munged"
  su -s /bin/sh munge -c munged || cannot "munged did not start"
  timeout -k 5 "$WAIT" sh -c 'until munge -n </dev/null | unmunge >/dev/null 2>&1; do sleep 0.2; done' \
    || cannot "munged does not answer"
fi

# ---- config: this machine as the only node, with its real topology and one fake GPU ----
NODE=$(slurmd -C | head -1)                      # NodeName=<host> CPUs=.. ... RealMemory=<MiB>
HOST=$(sed -E 's/^NodeName=([^ ]+).*/\1/' <<<"$NODE")
MEM=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$NODE")
NODE=$(sed -E "s/RealMemory=[0-9]+/RealMemory=$((MEM > 2048 ? MEM - 1024 : MEM))/" <<<"$NODE")
mkdir -p /var/lib/slurm/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
chown slurm:slurm /var/lib/slurm/slurmctld /var/log/slurm
CONF=$(cat <<EOF
# Written by clipbd scripts/slurm_local.sh: a single-node test cluster.
ClusterName=clipbd
SlurmctldHost=$HOST
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MinJobAge=3600
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP
GresTypes=gpu
$NODE Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
GRES="AutoDetect=off
NodeName=$HOST Name=gpu File=/dev/null Count=1"

changed=0
if [ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" != "$CONF" ]; then
  printf '%s\n' "$CONF" > /etc/slurm/slurm.conf; changed=1
fi
if [ "$(cat /etc/slurm/gres.conf 2>/dev/null)" != "$GRES" ]; then
  printf '%s\n' "$GRES" > /etc/slurm/gres.conf; changed=1
fi

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() {  # stop one daemon by its pid file, if it runs
  if running "$1"; then
    local pid; pid=$(cat "$1"); kill "$pid"
    timeout -k 5 "$WAIT" sh -c "while kill -0 $pid 2>/dev/null; do sleep 0.2; done" || true
  fi
}
if [ "$changed" = 1 ]; then
  say "config written: /etc/slurm/slurm.conf, /etc/slurm/gres.conf"
  stop /run/slurm/slurmd.pid; stop /run/slurm/slurmctld.pid
fi

running /run/slurm/slurmctld.pid || { say "starting slurmctld"; slurmctld || cannot "slurmctld did not start (see /var/log/slurm/slurmctld.log)"; }
running /run/slurm/slurmd.pid || { say "starting slurmd"; nice -n "$NICE" slurmd || cannot "slurmd did not start (see /var/log/slurm/slurmd.log)"; }

ready() { sinfo -h -N -p "$PARTITION" -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'; }
if ! timeout -k 5 "$WAIT" bash -c "$(declare -f ready); PARTITION=$PARTITION; until ready; do sleep 0.5; done"; then
  scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
  timeout -k 5 20 bash -c "$(declare -f ready); PARTITION=$PARTITION; until ready; do sleep 0.5; done" \
    || cannot "node $HOST not idle: $(sinfo -h -N -o '%T %E' 2>&1)"
fi
say "ready: node $HOST in partition $PARTITION ($(sinfo -h -N -o '%c CPUs, %m MB, %G'))"
