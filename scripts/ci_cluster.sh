#!/usr/bin/env bash
# CI: the cluster tests on a real SLURM. Brings up the single-node cluster on 127.0.0.1
# (installing Debian's packages on a fresh machine; needs root and apt), runs
# `pytest -m cluster`, and stops the cluster again whatever the outcome. Extra
# arguments go to pytest. Prints the tests' wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
export NFVAE_DATA_DIR="${NFVAE_DATA_DIR:-$(cd .. && pwd)/shared/data}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    echo "ci_cluster: needs root (or sudo) to install and start SLURM" >&2
    exit 1
fi
[ -x .venv/bin/python ] || bash scripts/setup.sh
trap 'bash scripts/slurm_down.sh || true' EXIT
start=$SECONDS
bash scripts/slurm_up.sh
echo "ci_cluster: cluster up in $((SECONDS - start)) s"

start=$SECONDS
status=0
NFVAE_REQUIRE_CLUSTER=1 .venv/bin/python -m pytest -m cluster tests/test_cluster.py "$@" || status=$?
echo "ci_cluster: cluster tests took $((SECONDS - start)) s (exit $status)"
exit "$status"
