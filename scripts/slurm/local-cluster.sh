#!/usr/bin/env bash
# CI check of the Slurm path: start a one-node Slurm cluster on this machine (munge, slurmctld,
# slurmd; /work/shared/reference/slurm-local.md), submit `idsynth generate` as a job array through
# scripts/slurm/generate.sbatch, wait, merge, and compare every shard with a single-process run.
#
#   scripts/slurm/local-cluster.sh IDSYNTH CONFIG WORKDIR [TASKS]
#
# Needs root and Debian's slurmctld slurmd slurm-client munge (scripts/install-deps.sh). Exit code 0:
# the array's dataset equals the single-process one byte for byte. The daemons are stopped on exit.
set -euo pipefail
idsynth=$(readlink -f "${1:?usage: local-cluster.sh IDSYNTH CONFIG WORKDIR [TASKS]}")
config=$(readlink -f "${2:?config}")
work=$(mkdir -p "${3:?workdir}" && readlink -f "$3")
tasks=${4:-4}
here=$(cd "$(dirname "$0")" && pwd)

[ "$(id -u)" -eq 0 ] || { echo "local-cluster: needs root (slurmd runs jobs as root here)"; exit 77; }
for c in slurmctld slurmd sbatch sinfo squeue munged munge unmunge; do
  command -v "$c" >/dev/null || { echo "local-cluster: $c not installed (scripts/install-deps.sh)"; exit 77; }
done

# 1. munge: a key, and the daemon (it refuses to start twice, so check first).
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
  munged --force >/dev/null 2>&1 || true
  sleep 1
  munge -n | unmunge >/dev/null || { echo "local-cluster: munge does not work"; exit 1; }
fi

# 2. slurm.conf with every path under the work folder.
s="$work/slurm"
rm -rf "$s" && mkdir -p "$s/state" "$s/spool" "$s/log"
host=$(hostname -s)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
cat > "$s/slurm.conf" <<CONF
ClusterName=idsynth-ci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
StateSaveLocation=$s/state
SlurmdSpoolDir=$s/spool
SlurmctldPidFile=$s/slurmctld.pid
SlurmdPidFile=$s/slurmd.pid
SlurmctldLogFile=$s/log/slurmctld.log
SlurmdLogFile=$s/log/slurmd.log
SlurmctldPort=6917
SlurmdPort=6918
NodeName=$host CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$s/slurm.conf"

stop_daemons() {
  for p in "$s/slurmd.pid" "$s/slurmctld.pid"; do
    if [ -s "$p" ]; then kill "$(cat "$p")" 2>/dev/null || true; fi
  done
}
trap stop_daemons EXIT

# 3. Daemons; the node is idle within seconds.
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
  if sinfo -h -o '%T' 2>/dev/null | grep -q idle; then break; fi
  sleep 1
done
sinfo -h -o '%T' | grep -q idle || { echo "local-cluster: node not idle"; sinfo; tail -n 20 "$s/log/"*.log; exit 1; }

# 4. The job array, and the reference run in one process.
cd "$work"
rm -rf array single
IDSYNTH="$idsynth" sbatch --wait --array=0-$((tasks - 1)) --output="$work/task-%a.out" \
  "$here/generate.sbatch" "$config" --set output.dir="$work/array" >/dev/null || {
  echo "local-cluster: job array failed"; cat "$work"/task-*.out; exit 1; }
"$idsynth" --log-level warn merge "$work/array"
"$idsynth" --log-level warn generate --config "$config" --set output.dir="$work/single" --no-progress >/dev/null

# 5. Same files, same bytes (config.resolved.yaml names the output folder, so it differs).
(cd single && find . -type f ! -name config.resolved.yaml | sort) > "$work/files-single"
(cd array && find . -type f ! -name config.resolved.yaml | sort) > "$work/files-array"
diff "$work/files-single" "$work/files-array"
while read -r f; do cmp "single/$f" "array/$f"; done < "$work/files-single"
echo "local-cluster: $tasks-task job array identical to the single-process run ($(grep -c '\.h5$' "$work/files-single") shards)"
