#!/usr/bin/env bash
# Set up (once) and run the test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export NFVAE_DATA_DIR="${NFVAE_DATA_DIR:-$(cd .. && pwd)/shared/data}"
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
