"""Lightning's TensorBoard logger with the scalar pages opening on the curves.

TensorBoard's Time Series and Scalars pages sort tag groups by name and expand the
first two. Lightning logs its epoch counter as a top-level ``epoch`` tag, which
made it the first card a user saw; here it is ``train/epoch``, beside the training
curves it indexes. (The HParams metrics, once ``hp/*`` copies, are the run's own
``val/*`` and ``test/*`` scalars: ``nfvae.hparams``.)
"""

from __future__ import annotations

from collections.abc import Mapping

from pytorch_lightning.loggers import TensorBoardLogger as _LightningTensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

EPOCH_TAG = "train/epoch"


class TensorBoardLogger(_LightningTensorBoardLogger):
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if "epoch" in metrics:
            metrics = {(EPOCH_TAG if key == "epoch" else key): value
                       for key, value in metrics.items()}
        super().log_metrics(metrics, step)
