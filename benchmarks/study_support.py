"""What the long studies' drivers share: run folders and what they hold (checkpoints,
``result.json``, ``test_curve.jsonl``), one driver per run (a lock file and its PID),
detaching into the background, and mean ± std for the tables."""

from __future__ import annotations

import fcntl
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

CURVE_FILE = "test_curve.jsonl"
RESULT_FILE = "result.json"


def run_name(kind: str, seed: int) -> str:
    return f"{kind}_seed{seed}"


def has_checkpoints(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("*.ckpt"))


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``last*.ckpt`` of the run: Lightning writes ``last-v1.ckpt`` when a
    ``last.ckpt`` it does not track is in the way (a folder edited by hand)."""
    found = list((run_dir / "checkpoints").glob("last*.ckpt"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def read_result(run_dir: Path) -> dict | None:
    """The run's ``result.json`` (written when its training and test ended), or None."""
    path = run_dir / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_curve(run_dir: Path) -> list[dict]:
    from nfvae.curves import read_curve as read

    return read(run_dir / CURVE_FILE)


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


def plot_over_seeds(ax, curves: list[list[dict]], x_key: str, x_scale: float, y_key: str,
                    label: str, **style) -> None:
    """One line per model: the mean over seeds of ``y_key`` at each curve point (epoch)
    that every seed has, against the seeds' mean ``x_key`` / ``x_scale``, and a band
    from their min to max where there are several seeds."""
    shared = sorted(set.intersection(*({p["epoch"] for p in c} for c in curves)))
    if not shared:
        return
    by_epoch = [{p["epoch"]: p for p in c} for c in curves]
    xs = [statistics.mean(c[e][x_key] for c in by_epoch) / x_scale for e in shared]
    ys = [[c[e][y_key] for c in by_epoch] for e in shared]
    line, = ax.plot(xs, [statistics.mean(v) for v in ys],
                    label=f"{label} ({len(curves)} seed{'s' * (len(curves) > 1)})", **style)
    if len(curves) > 1:
        ax.fill_between(xs, [min(v) for v in ys], [max(v) for v in ys],
                        color=line.get_color(), alpha=0.2)
