"""When Lightning writes a training step's logged values (shared by modules and callbacks)."""

from __future__ import annotations

import pytorch_lightning as pl


def logger_writes_this_step(trainer: pl.Trainer) -> bool:
    """Whether Lightning sends this training step's logged values to the logger.

    Lightning's own decision, as its step-end logging (``update_train_step_metrics``)
    takes it, asked during the step: it follows ``trainer.log_every_n_steps`` on the
    count of steps Lightning logs by, which a resumed run restores. (A callback that
    sets ``trainer.should_stop`` after the step makes Lightning write that step too.)
    """
    return trainer._logger_connector.should_update_logs or bool(trainer.fast_dev_run)
