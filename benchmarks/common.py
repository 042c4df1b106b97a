"""Shared set-up for benchmarks: one thread, the shared data, interleaved timing."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


def pin_threads() -> None:
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def data_dir(cli_value: str | None = None) -> Path:
    path = Path(cli_value or os.environ.get("NFVAE_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (path / "MNIST" / "raw").is_dir():
        raise SystemExit(f"MNIST not found under {path}/MNIST/raw; pass --data-dir or set "
                         "NFVAE_DATA_DIR")
    return path.resolve()


def compose(overrides: list[str], config_name: str = "train"):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides=overrides)


def interleaved(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each contender once per round, alternating the order; each returns seconds."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            seconds = contenders[name]()
            times[name].append(seconds)
            print(f"  round {r + 1}: {name:<10s} {seconds:7.2f} s", flush=True)
    return times


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
