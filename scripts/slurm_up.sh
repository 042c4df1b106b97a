#!/usr/bin/env bash
# A real single-node SLURM on this machine, on 127.0.0.1 only, to try the cluster path
# (python train.py -m hydra/launcher=slurm ...) and to run `pytest -m cluster`:
#
#   bash scripts/slurm_up.sh        # as root (or through sudo); idempotent
#   bash scripts/slurm_down.sh      # stops it again
#
# Installs Debian's packages when missing (slurm-wlm, munge, and slurmdbd with MariaDB:
# submitit follows its jobs with `sacct`, which needs accounting, or it would wait
# forever for a cancelled job), writes /etc/slurm/slurm.conf with one node that has this
# machine's CPUs and memory (from `slurmd -C`), partition `debug`, select/cons_tres, and
# starts munged, MariaDB, slurmdbd, slurmctld and slurmd. Returns once sinfo shows the
# node idle. State lives where Debian keeps it: /var/spool/slurmctld, /var/spool/slurmd,
# logs in /var/log/slurm.
#
# A second partition `pair` holds two more nodes n1 and n2 on this same host (one slurmd
# each, `slurmd -N n1`, ports 17001-17002, names in /etc/hosts), each declared with half
# the machine: enough to check a two-node job's wiring (trainer.num_nodes=2).
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    exec sudo -E bash "$0" "$@"
fi

CLUSTER=nfvae
HOST="$(hostname -s)"
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
LOG_DIR=/var/log/slurm
DB_PASS=nfvae-local-only
export DEBIAN_FRONTEND=noninteractive

say() { echo "slurm_up: $*"; }

# --- packages (tolerates a slow or briefly failing mirror) --------------------------
apt_install() {
    local attempt
    for attempt in 1 2 3; do
        if timeout 1200 apt-get install -y -q -o Acquire::Retries=5 \
                -o DPkg::Lock::Timeout=600 "$@"; then
            return 0
        fi
        say "apt-get install failed (attempt $attempt); updating the lists and retrying"
        timeout 600 apt-get update -q -o Acquire::Retries=5 || true
        sleep $((attempt * 10))
    done
    say "could not install $*" >&2
    return 1
}
missing=()
command -v slurmctld >/dev/null || missing+=(slurm-wlm)
command -v munged >/dev/null || missing+=(munge)
command -v slurmdbd >/dev/null || missing+=(slurmdbd)
command -v mariadbd >/dev/null || command -v mysqld >/dev/null || missing+=(mariadb-server)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    if ! apt-cache policy slurm-wlm 2>/dev/null | grep -q Candidate: ||
       apt-cache policy slurm-wlm 2>/dev/null | grep -q "Candidate: (none)"; then
        timeout 600 apt-get update -q -o Acquire::Retries=5
    fi
    apt_install "${missing[@]}"
fi

# --- the configuration this machine calls for ------------------------------------------
# slurmd -C: "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
read -r -a hw <<<"$(slurmd -C | head -1)"
declare -A HW
for kv in "${hw[@]}"; do HW["${kv%%=*}"]="${kv#*=}"; done
CPUS="${HW[CPUs]}"
MEM="${HW[RealMemory]}"
HALF_CPUS=$((CPUS / 2)); [ "$HALF_CPUS" -ge 1 ] || HALF_CPUS=1
NODE_NAMES=("$HOST" n1 n2)
new_conf="$(cat <<EOF
# Written by nfvae's scripts/slurm_up.sh: a one-host cluster on 127.0.0.1.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job may not start again before the job credential's lifetime has passed
# (120 s by default, as on most clusters); 30 s keeps the preemption test short.
AuthInfo=cred_expire=30
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
SlurmctldPort=6817
SlurmdPort=6818
# No cgroup hierarchy is delegated to us in a container: track a job's processes through
# their parent ids (a process that daemonizes would escape; training does not).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((MEM / CPUS))
ReturnToService=2
# submitit's job watcher reads job states with sacct, which needs slurmdbd.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# The machine itself: the node jobs run on.
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS Boards=${HW[Boards]} SocketsPerBoard=${HW[SocketsPerBoard]} CoresPerSocket=${HW[CoresPerSocket]} ThreadsPerCore=${HW[ThreadsPerCore]} RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
# Two more slurmd on the same host (slurmd -N n1, its own port), each declared with half
# the machine, so that a job can span two "nodes" (trainer.num_nodes=2). They share the
# real CPUs with the node above: use this partition for checking multi-node wiring only.
NodeName=n[1-2] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=[17001-17002] CPUs=$HALF_CPUS RealMemory=$((MEM / 2)) State=UNKNOWN
PartitionName=pair Nodes=n[1-2] MaxTime=INFINITE State=UP
EOF
)"

nodes_idle() {
    local states
    states="$(timeout 10 sinfo -h -N -o '%N %T' 2>/dev/null | sort -u)" || return 1
    [ "$(grep -c . <<<"$states")" = "${#NODE_NAMES[@]}" ] || return 1
    ! grep -qvE ' (idle|mixed|allocated)$' <<<"$states"
}

if [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$new_conf" ] && nodes_idle; then
    say "already up: $(sinfo -h -N -o '%N %P %T %c CPUs %m MB' | tr '\n' ' ')"
    exit 0
fi
# Something is off (not running, or another configuration): start from a clean stop.
bash "$(dirname "$0")/slurm_down.sh" >/dev/null 2>&1 || true

# Lightning takes the first node's name from SLURM_NODELIST as the rendezvous address.
grep -q "nfvae slurm_up" /etc/hosts || echo "127.0.0.1 n1 n2  # nfvae slurm_up" >>/etc/hosts
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR" /run/munge
printf '%s\n' "$new_conf" >"$CONF"

# --- munge ------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then mungekey --create --force; else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
fi
chown munge:munge /etc/munge/munge.key /run/munge
chmod 400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
fi
munge -n | unmunge >/dev/null || { say "munged does not answer" >&2; exit 1; }

# --- MariaDB and slurmdbd (accounting, so that sacct answers) ---------------------------
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if ! mysqladmin ping --silent >/dev/null 2>&1; then
    # bind-address 127.0.0.1 is Debian's default; skip-networking would also do
    (cd / && exec setsid mysqld_safe --bind-address=127.0.0.1) </dev/null >/dev/null 2>&1 &
    for _ in $(seq 120); do mysqladmin ping --silent >/dev/null 2>&1 && break; sleep 0.5; done
fi
mysqladmin ping --silent >/dev/null 2>&1 || { say "MariaDB did not start" >&2; exit 1; }
mysql -u root <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
cat >"$DBD_CONF" <<EOF
# Written by nfvae's scripts/slurm_up.sh.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$DB_PASS
EOF
chmod 600 "$DBD_CONF"
slurmdbd </dev/null >/dev/null 2>&1
for _ in $(seq 120); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
sacctmgr -n list cluster >/dev/null || { say "slurmdbd does not answer: see $LOG_DIR/slurmdbd.log" >&2; exit 1; }
sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null

# --- slurmctld and slurmd ---------------------------------------------------------------
# -c: a clean start; jobs of an earlier cluster here are not ours to resume.
slurmctld -c </dev/null >/dev/null 2>&1
for _ in $(seq 60); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
slurmd </dev/null >/dev/null 2>&1
for name in n1 n2; do
    if ! slurmd -N "$name" </dev/null >/dev/null 2>"$LOG_DIR/slurmd-$name.start"; then
        say "slurmd -N $name failed: $(cat "$LOG_DIR/slurmd-$name.start")" >&2
        say "(several slurmd on one host need a SLURM built with --enable-multiple-slurmd)" >&2
        exit 3
    fi
done

deadline=$((SECONDS + 120))
until nodes_idle; do
    if [ $SECONDS -gt $deadline ]; then
        say "the node did not become idle:" >&2
        sinfo -N -l >&2 || true
        tail -20 "$LOG_DIR/slurmctld.log" >&2 || true
        exit 1
    fi
    # A node that was down in an earlier run comes back once slurmd registers; say so.
    for name in "${NODE_NAMES[@]}"; do
        if sinfo -h -n "$name" -o %T 2>/dev/null | grep -qE '^(down|drain)'; then
            scontrol update nodename="$name" state=resume 2>/dev/null || true
        fi
    done
    sleep 1
done
say "up: $(sinfo -h -N -o '%N %P %T %c CPUs %m MB' | tr '\n' ' ')"
