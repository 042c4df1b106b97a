"""Early stopping of the papers' protocol: patience counts from the end of the KL warm-up."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason
from torch import Tensor


class WarmupEarlyStopping(EarlyStopping):
    """Early stopping whose patience counts only epochs after the KL warm-up.

    van den Berg et al. (2018): the best validation loss is tracked from the first
    epoch, but an epoch without improvement counts towards ``patience`` only once
    ``current_epoch >= warmup_epochs`` (0-based; beta has reached 1 by then). During
    warm-up the loss is still falling because beta rises, so stopping on it would be
    premature. Non-finite metrics still stop training at once.
    """

    def __init__(self, warmup_epochs: int = 0, **kwargs):
        super().__init__(**kwargs)
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        self.warmup_epochs = int(warmup_epochs)
        self._in_warmup = False

    def _run_early_stopping_check(self, trainer: pl.Trainer) -> None:
        self._in_warmup = trainer.current_epoch < self.warmup_epochs
        super()._run_early_stopping_check(trainer)

    def _evaluate_stopping_criteria(self, current: Tensor) -> tuple[bool, str | None]:
        waited = self.wait_count
        should_stop, reason = super()._evaluate_stopping_criteria(current)
        if self._in_warmup and self.wait_count > waited:
            # No improvement during warm-up: not counted, and never a reason to stop.
            self.wait_count = waited
            self.stopping_reason = EarlyStoppingReason.NOT_STOPPED
            return False, None
        return should_stop, reason
