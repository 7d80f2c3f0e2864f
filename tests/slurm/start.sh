#!/usr/bin/env bash
# Starts a private single-node Slurm cluster (Debian's slurmctld, slurmd, slurm-client, munge) for the sweep's cluster
# tests: config, spool, logs and pid files live in STATE_DIR (nothing under /etc/slurm is written). Installs the packages
# with apt-get when they are missing. Prints "export SLURM_CONF=..." on success.
# Exit 0: running; 77: cannot run here (not root, install failed, daemons did not start) with the reason on stderr.
# Stop it with tests/slurm/stop.sh STATE_DIR (by the pids recorded here). Verified setup: ../shared/notes/slurm.md.
set -uo pipefail
state="${1:?usage: start.sh STATE_DIR}"
skip() { echo "slurm: $*" >&2; exit 77; }
[[ "$(id -u)" == 0 ]] || skip "not root: the daemons run as root and the packages need apt-get"
missing=0
for c in slurmctld slurmd sbatch munged; do command -v "$c" >/dev/null || missing=1; done
if [[ $missing == 1 ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$state.apt.log" 2>&1 || skip "apt-get update failed (see $state.apt.log)"
  apt-get install -y -qq slurmctld slurmd slurm-client munge >>"$state.apt.log" 2>&1 \
    || skip "apt-get install slurmctld slurmd slurm-client munge failed (see $state.apt.log)"
fi
mkdir -p "$state"/{spool/ctld,spool/d,log}
state="$(cd "$state" && pwd)"
host="$(hostname -s)"
# A free port pair, so that a second cluster on the machine (another checkout's tests) does not collide.
port=$(( 20000 + (RANDOM % 20000) * 2 ))
cat >"$state/slurm.conf" <<CONF
ClusterName=lp
SlurmctldHost=$host
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmdSpoolDir=$state/spool/d
StateSaveLocation=$state/spool/ctld
SlurmUser=root
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
MinJobAge=600
DefMemPerCPU=4000
NodeName=$host CPUs=$(nproc) RealMemory=20000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$state/slurm.conf"
# munge: one daemon per machine; start it only when none answers (and remember that we did).
if ! munge -n </dev/null >/dev/null 2>&1; then
  mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none && chmod 400 /etc/munge/munge.key
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  su -s /bin/sh munge -c /usr/sbin/munged || skip "munged did not start"
  for _ in $(seq 20); do [[ -s /run/munge/munged.pid ]] && break; sleep 0.25; done
  cp /run/munge/munged.pid "$state/munged.pid" 2>/dev/null || true
fi
slurmctld -f "$SLURM_CONF" || skip "slurmctld did not start (see $state/log/slurmctld.log)"
for _ in $(seq 40); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.25; done
slurmd -f "$SLURM_CONF" || skip "slurmd did not start (see $state/log/slurmd.log)"
for _ in $(seq 60); do sinfo -h -o %t 2>/dev/null | grep -Eq '^idle' && break; sleep 0.5; done
sinfo -h -o %t | grep -Eq '^idle' || skip "the node did not become idle ($(sinfo -h -o %t 2>&1)); see $state/log"
echo "export SLURM_CONF=$SLURM_CONF"
