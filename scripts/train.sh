#!/usr/bin/env bash
# Set up (once) and train on the built-in default data; extra arguments go to train.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python train.py "$@"
