#!/usr/bin/env bash
# Set up (once) and run the test suite without the tests marked slow. Extra arguments
# go to pytest: `scripts/test.sh -m slow` runs only the slow ones, `-m ""` everything.
# Tests that need the benchmark datasets read $NFVAE_DATA_DIR, else ./data (as
# training does), and skip naming `python -m nfvae.data.fetch` when a dataset is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -m "not slow and not cluster" "$@"
