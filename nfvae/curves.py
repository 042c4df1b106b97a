"""The test NLL while training: one point every few epochs, against epochs and compute.

A long run's question is "how good is the model after this much compute?". The
callback answers it on a fixed subset of the test set with fixed per-example noise
(the module's ``example_nll``, which every model kind has: importance-sampled for a
VAE, exact up to the dequantization draws for an image flow), so every point of every run is the same function of the
weights and points compare across epochs, runs and resumes. The subset is small
(1000 images x 1000 samples by default, ~10-30 s on one core for the IWAE MLP):
a curve, not the final figure, which the full test set with 5000 samples gives.

Compute is counted while training only (the training batches of each epoch, not
validation, figures or this callback's own scoring): wall-clock seconds and the
process's CPU seconds. Both are kept in checkpoints, so a resumed run continues the
count. Each point goes to TensorBoard (``zz_test_curve/nll``, ``zz_test_curve/bpd`` and,
for a VAE, ``zz_test_curve/neg_elbo`` against the epoch, ``zz_test_curve/nll_vs_train_seconds`` against the training
seconds) and, as one JSON line, to ``test_curve.jsonl`` in the run folder, with the
run's health figures (resident memory, event-file and checkpoint-folder sizes,
seconds per epoch, the seconds spent in validation and the figures drawn after it), so
the growth of a long run can be read without TensorBoard.
A run killed after its last checkpoint repeats some epochs when resumed; readers
keep the last line of each epoch.
"""

from __future__ import annotations

import json
import math
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

CURVE_FILE = "test_curve.jsonl"


def folder_bytes(path: str | Path, pattern: str = "*") -> int:
    path = Path(path)
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())


def rss_mb() -> float:
    """Resident memory of this process now (MiB), from /proc; 0 where there is none."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def pixels(pl_module: pl.LightningModule) -> int:
    """Dimensions of one data point, for bits per dimension (the image flows' padding
    excluded: their bits/dim is per pixel of the data, as their test/bpd)."""
    return math.prod(pl_module.hparams["data_shape"])


def read_curve(path: str | Path) -> list[dict[str, Any]]:
    """The points of a ``test_curve.jsonl``, one per epoch (the last written wins)."""
    points: dict[int, dict[str, Any]] = {}
    path = Path(path)
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                point = json.loads(line)
                points[int(point["epoch"])] = point
    return [points[e] for e in sorted(points)]


class NLLCurveLogger(pl.Callback):
    """Scores ``num_examples`` test images with ``num_samples`` importance samples after
    epoch ``e`` (1-based count of finished epochs) when ``e % every_n_epochs == 0``, when
    ``e`` is in ``at_epochs`` (early points of a long run), and after the last epoch."""

    def __init__(self, every_n_epochs: int = 50, num_examples: int = 1000,
                 num_samples: int = 1000, at_epochs: Sequence[int] = (), split: str = "test",
                 batch_size: int = 100, file: str = CURVE_FILE,
                 max_batch_samples: int = 2**14):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if num_examples < 1 or num_samples < 1 or batch_size < 1:
            raise ValueError("num_examples, num_samples and batch_size must be >= 1, got "
                             f"{num_examples}, {num_samples}, {batch_size}")
        self.every_n_epochs = int(every_n_epochs)
        self.num_examples, self.num_samples = int(num_examples), int(num_samples)
        self.at_epochs = {int(e) for e in at_epochs}
        self.split, self.batch_size, self.file = split, int(batch_size), file
        # Samples per decoder pass: 2^14 keeps scoring within the training run's memory
        # (2^16, the evaluation default, adds ~600 MiB of transient peak for 784 pixels).
        self.max_batch_samples = int(max_batch_samples)
        self.train_seconds = 0.0
        self.train_cpu_seconds = 0.0
        self.last_epoch_seconds = 0.0
        # Validation plus the figure callbacks that draw at its end (they run before this
        # one, which the protocol lists last), summed over the run: what figures cost.
        self.validation_seconds = 0.0
        self._validation_start: float | None = None
        self._epoch_start: tuple[float, float] | None = None
        self._scored_epoch = -1
        self._epoch_lr: float | None = None

    # -- compute spent training ---------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        # A run resumed mid-epoch (from on_exception.ckpt) gets no on_train_epoch_start
        # for the rest of that epoch: its clock starts here.
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = (time.perf_counter(), time.process_time())
        self._epoch_lr = _learning_rate(trainer)  # the epoch's rate, before the scheduler steps

    def _stop_clock(self) -> None:
        if self._epoch_start is None:
            return
        wall, cpu = self._epoch_start
        self.last_epoch_seconds = time.perf_counter() - wall
        self.train_seconds += self.last_epoch_seconds
        self.train_cpu_seconds += time.process_time() - cpu
        self._epoch_start = None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._stop_clock()
            self._validation_start = time.perf_counter()

    # -- scoring: at validation's end, so the epoch's checkpoint (saved right after)
    # -- holds the clock and the point is not repeated on resume ----------------------
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._validation_start is not None:
            self.validation_seconds += time.perf_counter() - self._validation_start
            self._validation_start = None
        if not trainer.sanity_checking:
            self._maybe_score(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop_clock()  # epochs without validation
        self._maybe_score(trainer, pl_module)

    def should_score(self, trainer: pl.Trainer) -> bool:
        if trainer.fast_dev_run:
            return False  # a smoke run, like Lightning's checkpoints and loggers there
        done = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and done == trainer.max_epochs
        return done % self.every_n_epochs == 0 or done in self.at_epochs or last

    def _maybe_score(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch == self._scored_epoch or not self.should_score(trainer):
            return
        self._scored_epoch = epoch
        if not trainer.is_global_zero:
            return
        started = time.perf_counter()
        nll, neg_elbo = self.score(trainer.datamodule, pl_module)
        point = {
            "epoch": epoch + 1, "step": trainer.global_step, "nll": nll, "neg_elbo": neg_elbo,
            "bpd": nll / (pixels(pl_module) * math.log(2)),
            "train_seconds": self.train_seconds, "train_cpu_seconds": self.train_cpu_seconds,
            "epoch_seconds": self.last_epoch_seconds,
            "validation_and_figure_seconds": self.validation_seconds,
            "score_seconds": time.perf_counter() - started,
            "lr": self._epoch_lr, "rss_mb": rss_mb(), "peak_rss_mb": peak_rss_mb(),
            "event_bytes": folder_bytes(trainer.log_dir or trainer.default_root_dir,
                                        "events.out.tfevents.*"),
            "checkpoint_bytes": folder_bytes(Path(trainer.default_root_dir) / "checkpoints"),
            "time": time.time(),
        }
        writer = _tensorboard(trainer)
        if writer is not None:
            writer.add_scalar("zz_test_curve/nll", nll, epoch + 1)
            if neg_elbo is not None:
                writer.add_scalar("zz_test_curve/neg_elbo", neg_elbo, epoch + 1)
            writer.add_scalar("zz_test_curve/bpd", point["bpd"], epoch + 1)
            writer.add_scalar("zz_test_curve/nll_vs_train_seconds", nll,
                              int(self.train_seconds))
            writer.add_scalar("zz_test_curve/train_cpu_hours", self.train_cpu_seconds / 3600,
                              epoch + 1)
            writer.add_scalar("zz_health/rss_mb", point["rss_mb"], epoch + 1)
            writer.add_scalar("zz_health/epoch_seconds", self.last_epoch_seconds, epoch + 1)
        with open(Path(trainer.default_root_dir) / self.file, "a") as f:
            f.write(json.dumps(point) + "\n")

    @torch.no_grad()
    def score(self, datamodule, pl_module: pl.LightningModule) -> tuple[float, float | None]:
        """(NLL, -ELBO) in nats, averaged over the subset of ``datamodule``'s split,
        through the module's fixed-noise API (``example_nll``, which every model kind
        has; ``example_elbo`` where there is a bound, else -ELBO is None)."""
        x_all, _ = datamodule.split(self.split)
        x_all = x_all[:self.num_examples]
        seed = int(getattr(pl_module, "eval_noise_seed", 0))
        has_bound = hasattr(pl_module, "example_elbo")
        was_training = pl_module.training
        pl_module.eval()
        nll_sum = elbo_sum = 0.0
        try:
            for start in range(0, len(x_all), self.batch_size):
                x = x_all[start:start + self.batch_size].to(pl_module.device)
                index = torch.arange(start, start + len(x))
                nll_sum += float(pl_module.example_nll(
                    x, index, self.num_samples, seed,
                    max_batch_samples=self.max_batch_samples).double().sum())
                if has_bound:
                    elbo_sum += float(pl_module.example_elbo(x, index, seed)["neg_elbo"]
                                      .double().sum())
        finally:
            pl_module.train(was_training)
        return nll_sum / len(x_all), (elbo_sum / len(x_all) if has_bound else None)

    # -- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        wall, cpu = self.train_seconds, self.train_cpu_seconds
        if self._epoch_start is not None:
            # A mid-epoch checkpoint (on_exception.ckpt when stopped): its share of the
            # epoch so far; the resumed run's clock starts again with the epoch's rest.
            wall += time.perf_counter() - self._epoch_start[0]
            cpu += time.process_time() - self._epoch_start[1]
        return {"train_seconds": wall, "train_cpu_seconds": cpu,
                "validation_seconds": self.validation_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_seconds = float(state_dict.get("train_seconds", 0.0))
        self.train_cpu_seconds = float(state_dict.get("train_cpu_seconds", 0.0))
        self.validation_seconds = float(state_dict.get("validation_seconds", 0.0))


def _tensorboard(trainer: pl.Trainer):
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def _learning_rate(trainer: pl.Trainer) -> float | None:
    if not trainer.optimizers:
        return None
    return float(trainer.optimizers[0].param_groups[0]["lr"])
