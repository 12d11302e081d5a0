#!/usr/bin/env bash
# Installs (from Debian's packages) and starts a one-node Slurm on 127.0.0.1 for the Slurm
# tests: munged, slurmctld and slurmd, all as root. Does nothing when a Slurm controller
# already answers. Run as root: `bash .ci/slurm.sh`.
set -euo pipefail
PATH="$PATH:/usr/sbin:/sbin"

if command -v scontrol >/dev/null 2>&1 && scontrol ping 2>/dev/null | grep -q 'is UP'; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "starting Slurm needs root" >&2
  exit 1
fi

packages=(slurmctld slurmd slurm-client munge)
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
  ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1 || true
    apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null
  fi
fi

host=$(hostname -s)
if ! getent hosts "$host" >/dev/null; then
  echo "127.0.0.1 $host" >>/etc/hosts
fi

# munge: the key the package made, the daemon as its own user.
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
fi
# No controller answers: start every daemon afresh (any left from before, say stopped
# by a package upgrade half-way, would only get in the way).
for daemon in slurmctld slurmd munged; do
  pkill -x "$daemon" 2>/dev/null || true
done
for _ in $(seq 1 50); do
  pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || pgrep -x munged >/dev/null ||
    break
  sleep 0.1
done
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
runuser -u munge -- munged

# One node on 127.0.0.1 that claims 16 CPUs and 16 GiB (`config_overrides`), so that a
# cluster's scheduler and several workers fit beside each other on a 2-core machine.
# In a container, processes are tracked through /proc and tasks are not confined.
mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
cat >/etc/slurm/slurm.conf <<EOF
ClusterName=shoal
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=16 RealMemory=16384 State=UNKNOWN
PartitionName=shoal Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld
slurmd

for _ in $(seq 1 150); do
  if sinfo --noheader --format=%T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; then
    exit 0
  fi
  sleep 0.2
done
echo "Slurm did not come up; its logs:" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
