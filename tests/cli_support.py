"""Run the real train.py / eval.py / visualize.py as a user does: a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_script(script: str, *args: str, cwd: Path, env: dict | None = None,
               timeout: float = 600) -> Result:
    """``python <script> args...`` from ``cwd`` (Hydra's outputs/ land there)."""
    # A developer's HYDRA_FULL_ERROR=1 would change what the user sees; tests set it.
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environment.update({"OMP_NUM_THREADS": "1", **(env or {})})
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout)
    return Result(done.returncode, done.stdout, done.stderr, time.perf_counter() - start)
