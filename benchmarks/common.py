"""Shared set-up for benchmarks: one thread, the shared data, interleaved timing."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

# The model of bench_train.py and bench_precision.py: MNIST with dynamic binarization,
# MLP 784-300-300, latent 64, amortized planar K=10, batch 100, Adam 1e-3, no warm-up,
# and a Trainer that only trains (no validation, checkpoints, callbacks or progress bar).
PLANAR_MNIST_OVERRIDES = [
    "data=mnist", "data.download=false", "data.batch_size=100",
    "model.latent_dim=64", "model.encoder.hidden_dims=[300,300]",
    "model.decoder.hidden_dims=[300,300]",
    "flow=planar", "flow.num_layers=10", "flow.amortized=true",
    "optimizer.lr=1e-3", "objective.beta_start=1.0", "objective.warmup_epochs=0",
    "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "trainer.enable_checkpointing=false", "callbacks=none",
]


def pin_threads() -> None:
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def data_dir(cli_value: str | None = None) -> Path:
    path = Path(cli_value or os.environ.get("NFVAE_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (path / "MNIST" / "raw").is_dir():
        raise SystemExit(f"MNIST not found under {path}/MNIST/raw; pass --data-dir or set "
                         "NFVAE_DATA_DIR")
    return path.resolve()


def run_dirs(cli_data_dir: str | None, prefix: str) -> list[str]:
    """The overrides every benchmark run starts with: a fresh temporary output folder
    and the (checked) shared data folder."""
    out = Path(tempfile.mkdtemp(prefix=prefix))
    return [f"paths.output_dir={out}", f"data.data_dir={data_dir(cli_data_dir)}"]


def compose(overrides: list[str], config_name: str = "train"):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides=overrides)


def interleaved(contenders: dict[str, Callable[[], float]], rounds: int,
                quiet: bool = False) -> dict[str, list[float]]:
    """Run each contender once per round, alternating the order; each returns seconds."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            seconds = contenders[name]()
            times[name].append(seconds)
            if not quiet:
                print(f"  round {r + 1}: {name:<10s} {seconds:7.2f} s", flush=True)
    return times


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class TrainingEpochTimer(pl.Callback):
    """Appends each training epoch's seconds, without the Trainer's start-up and
    tear-down, to ``seconds``."""

    def __init__(self, seconds: list[float]):
        self.seconds = seconds

    def on_train_epoch_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds.append(time.perf_counter() - self.start)


class StepClock(pl.Callback):
    """CPU seconds of this thread in the training steps after the first epoch (warm-up):
    on a shared machine, CPU time is far steadier than wall time, and with one thread
    the step's work is all on this thread. ``measuring(on)`` is told at each step's
    start whether it is timed."""

    def __init__(self):
        self.seconds, self.steps, self.start = 0.0, 0, None

    def measuring(self, on: bool) -> None:
        pass

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.start = time.thread_time() if trainer.current_epoch > 0 else None
        self.measuring(self.start is not None)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            self.seconds += time.thread_time() - self.start
            self.steps += 1


def plain_training_steps(model, optimizer, x_train: torch.Tensor, num_steps: int | None = None,
                         batch_size: int = 100) -> None:
    """The leanest plain loop of the benchmark model: a fresh permutation, index batches
    of the preloaded images, dynamic binarization, the negative ELBO, an optimizer step;
    ``num_steps`` batches (default: one epoch)."""
    from nfvae.data.base import sample_binary
    from nfvae.objectives import negative_elbo

    order = torch.randperm(len(x_train))
    starts = range(0, len(x_train), batch_size)
    for start in starts if num_steps is None else starts[:num_steps]:
        x = sample_binary(x_train[order[start:start + batch_size]])
        loss = negative_elbo(model(x), 1.0).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
