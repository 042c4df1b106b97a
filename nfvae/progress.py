"""A progress bar whose training loss is the loss of the step just run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar


class LiveLossProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` that shows ``train/loss`` of the latest step at every redraw.

    The module logs its training figures only on the steps the logger writes
    (``trainer.log_every_n_steps``), so Lightning's own bar would show a value that
    changes once per interval. This bar keeps the loss Lightning hands every callback
    after each step and turns it into a number only when it redraws (every
    ``refresh_rate`` steps): no per-step ``self.log`` and no per-step device sync.
    """

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False,
                 key: str = "train/loss"):
        super().__init__(refresh_rate=refresh_rate, process_position=process_position,
                         leave=leave)
        self.key = key
        self._loss: torch.Tensor | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        self._loss = loss.detach() if torch.is_tensor(loss) and loss.numel() == 1 else None
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                    ) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        if self._loss is not None:
            items[self.key] = float(self._loss)
        return items
