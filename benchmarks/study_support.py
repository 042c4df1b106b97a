"""What the long studies' drivers share: one driver per runs folder (a lock file
and its PID), detaching into the background, and mean ± std for the tables."""

from __future__ import annotations

import fcntl
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path


def hold_lock(runs_dir: Path, script: str, name: str = "driver"):
    """Refuse a second driver on ``name`` (the whole folder, or one run) in ``runs_dir``:
    the lock lasts as long as the returned file object."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    handle = open(runs_dir / f"{name}.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another {script} is already training {name} in {runs_dir} "
                         f"(see {runs_dir / f'{name}.pid'})") from None
    (runs_dir / f"{name}.pid").write_text(str(os.getpid()))
    return handle


def background(script: Path, argv: list[str], runs_dir: Path, cwd: Path) -> None:
    """Start ``script`` again with ``argv`` less ``--background``, detached (its own
    session, nice 10, one thread), logging to ``<runs_dir>/driver.log``."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    log = open(runs_dir / "driver.log", "a")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = subprocess.Popen(
        ["nice", "-n", "10", sys.executable, str(script),
         *[a for a in argv if a != "--background"]],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        start_new_session=True, cwd=str(cwd))
    print(f"started PID {process.pid}; log {runs_dir / 'driver.log'}")


def mean_std(values: list[float | None], digits: int = 2) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
