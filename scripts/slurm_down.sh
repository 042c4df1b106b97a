#!/usr/bin/env bash
# Stop what scripts/slurm_up.sh started: cancel the cluster's jobs, then slurmd,
# slurmctld, slurmdbd, MariaDB and munged, each through its pid file. Idempotent.
set -uo pipefail

if [ "$(id -u)" != 0 ]; then
    exec sudo -E bash "$0" "$@"
fi

say() { echo "slurm_down: $*"; }

# Stop a daemon by the pid in its pid file, TERM then (after 20 s) KILL.
stop_pidfile() {
    local file="$1" pid
    [ -s "$file" ] || return 0
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$file"
}

if timeout 10 scontrol ping 2>/dev/null | grep -q UP; then
    jobs="$(squeue -h -o %A 2>/dev/null | sort -u)"
    if [ -n "$jobs" ]; then
        say "cancelling jobs $(echo $jobs)"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null
        for _ in $(seq 60); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 1; done
    fi
fi
for file in /run/slurmd*.pid; do stop_pidfile "$file"; done
stop_pidfile /run/slurmctld.pid
stop_pidfile /run/slurmdbd.pid
if command -v mysqladmin >/dev/null && mysqladmin ping --silent >/dev/null 2>&1; then
    mysqladmin shutdown 2>/dev/null || stop_pidfile /run/mysqld/mysqld.pid
fi
stop_pidfile /run/munge/munged.pid
say "down"
