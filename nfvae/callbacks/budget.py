"""Stop training after a budget of training compute, counted in CPU or wall seconds.

Lightning's ``Trainer(max_time=...)`` counts wall-clock time from the start of ``fit``,
validation and figures included, so on a shared machine the same budget buys a
different amount of training from run to run. A compute study ("bits/dim after 45
minutes") wants the training itself counted: this callback sums the time spent in
training batches only (forward, backward, optimizer step and data loading), with the
process's CPU clock by default (one thread: CPU seconds ~ wall seconds on a quiet
machine, and unaffected by other processes on a busy one).

The budget is checked when validation ends, before the epoch's checkpoint is written,
so a run stops at an epoch boundary with its checkpoint saved; the spent seconds are
in every checkpoint, so a resumed run continues the count (and stops at once when the
budget is already spent; raise ``minutes`` to train on).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger(__name__)

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


class ComputeBudget(pl.Callback):
    """Stops ``fit`` at the first epoch end after ``minutes`` of training time."""

    def __init__(self, minutes: float, clock: str = "cpu"):
        super().__init__()
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
        if not minutes > 0:
            raise ValueError(f"minutes must be > 0, got {minutes}")
        self.minutes, self.clock = float(minutes), clock
        self.spent_seconds = 0.0
        self._batch_start: float | None = None

    @property
    def exhausted(self) -> bool:
        return self.spent_seconds >= 60 * self.minutes

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.exhausted:
            log.info("compute budget of %.1f %s-minutes already spent (%.1f); not training "
                     "further (raise minutes to continue)", self.minutes, self.clock,
                     self.spent_seconds / 60)
            trainer.should_stop = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._batch_start = CLOCKS[self.clock]()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._batch_start is not None:
            self.spent_seconds += CLOCKS[self.clock]() - self._batch_start
            self._batch_start = None

    def _check(self, trainer: pl.Trainer) -> None:
        if self.exhausted and not trainer.should_stop:
            log.info("compute budget spent: %.1f of %.1f %s-minutes of training; stopping "
                     "after epoch %d", self.spent_seconds / 60, self.minutes, self.clock,
                     trainer.current_epoch + 1)
            trainer.should_stop = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)  # epochs without validation

    def state_dict(self) -> dict[str, Any]:
        return {"spent_seconds": self.spent_seconds, "clock": self.clock}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("clock", self.clock) != self.clock:
            raise ValueError(f"the checkpoint counted its budget in {state_dict['clock']} "
                             f"seconds, this run asks for {self.clock}: resume with "
                             f"clock={state_dict['clock']}")
        self.spent_seconds = float(state_dict.get("spent_seconds", 0.0))
