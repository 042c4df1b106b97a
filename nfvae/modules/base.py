"""``TrainingModule``: what every nfvae LightningModule shares, so a module holds only
its model's job (build it, compute the loss, evaluate).

It gives a subclass:

* the optimizer (and optional learning-rate schedule) from its ``optimizer`` and
  ``scheduler`` hyperparameters (``_partial_`` Hydra configs);
* resumes that apply the configured optimizer settings to the restored state
  (``apply_optimizer_settings``) and keep the latest ``val/*`` figures;
* the policy callbacks (``nfvae.callbacks``): the non-finite guard (stop, or skip with
  ``skip_nonfinite``) and exact-resume RNG state, whatever callbacks a run composes;
* ``RESUME_SETTINGS``: the hyperparameters a resume may change (they steer training,
  not the meaning of the weights); everything else must match the checkpoint;
* ``steps_per_epoch`` for warm-ups counted in epochs (``nfvae.objectives.Warmup``).

A subclass calls ``save_hyperparameters()`` with plain containers (``to_plain``), has
``optimizer`` (and may have ``scheduler`` and ``skip_nonfinite``) among them, and may
define ``describe_nonfinite_loss() -> str`` to name the terms of a non-finite loss.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pytorch_lightning as pl
from hydra.utils import instantiate

from nfvae.callbacks import ExactResumeRNG, NonFiniteGuard
from nfvae.checkpoints import apply_optimizer_settings, record_validation_metrics
from nfvae.loading import MODULE_KEY, class_path


class TrainingModule(pl.LightningModule):
    """Optimizer, resume and policy callbacks shared by every model kind."""

    #: Hyperparameters (dotted prefixes) that may change on resume; ``optimizer._target_``
    #: never may (Adam's saved moments cannot continue as SGD's).
    RESUME_SETTINGS: ClassVar[tuple[str, ...]] = ("optimizer", "data", "skip_nonfinite")

    def configure_callbacks(self) -> list[pl.Callback]:
        # Lightning asks again for trainer.test after trainer.fit; the instances attached
        # for the fit stay (returning new ones would replace them, with a notice).
        attached = {type(c) for c in self._trainer.callbacks} if self._trainer else set()
        policies = [NonFiniteGuard(skip=bool(self.hparams.get("skip_nonfinite", False))),
                    ExactResumeRNG()]
        return [c for c in policies if type(c) not in attached]

    def configure_optimizers(self):
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        settings = dict(self.hparams.get("scheduler") or {})
        if not settings:
            return optimizer
        # interval: "epoch" (stepped after each epoch) or "step"; the rest builds it.
        interval = settings.pop("interval", "epoch")
        scheduler = instantiate(settings)(optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": interval,
                                 "name": "train/lr"}}

    @property
    def steps_per_epoch(self) -> float:
        """Training batches per epoch (1 before a trainer is attached or while unknown)."""
        if self._trainer is None:
            return 1
        batches = self.trainer.num_training_batches
        return batches if math.isfinite(batches) and batches > 0 else 1

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[MODULE_KEY] = class_path(self)  # what nfvae.loading.load_module loads
        record_validation_metrics(self._trainer, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Before Lightning loads the optimizer state: the configured settings apply.
        apply_optimizer_settings(checkpoint, self.hparams.optimizer)
