#!/usr/bin/env bash
# Create .venv and install nfvae with its test dependencies. Idempotent: a second
# run reuses the environment and reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin="${PYTHON:-}"
if [[ -z "$python_bin" ]]; then
    for candidate in python3.11 python3.12 python3.10 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then python_bin="$candidate"; break; fi
    done
fi
if [[ -z "$python_bin" ]]; then
    echo "setup: no python3 found; install Python >= 3.10 or set PYTHON=/path/to/python" >&2
    exit 1
fi

if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv with $python_bin"
    "$python_bin" -m venv .venv
fi

stamp=.venv/.nfvae-installed
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]] && .venv/bin/python -c "import nfvae" 2>/dev/null; then
    echo "setup: .venv is up to date"
    exit 0
fi

echo "setup: installing nfvae and its dependencies into .venv"
.venv/bin/python -m pip install --quiet --editable ".[dev]"
echo "$wanted" > "$stamp"
