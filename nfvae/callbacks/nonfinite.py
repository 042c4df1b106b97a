"""The non-finite policy: stop with a message naming the step (and the parameters), or
skip the step, when the training loss or a gradient is NaN or infinite.

Module-agnostic: it reads the loss the module's ``training_step`` returns (Lightning
hands it to ``on_before_backward``) and the gradients of ``pl_module``'s parameters.
A module may add detail to the message through ``describe_nonfinite_loss()``.
Under DDP all ranks vote, so every rank stops or skips the same step.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from nfvae.callbacks.rng import STATE_KEY
from nfvae.errors import UserError
from nfvae.logging_steps import logger_writes_this_step


class NonFiniteLossError(UserError, FloatingPointError):
    """The training objective went NaN or infinite; raised before the optimizer step."""


class NonFiniteGradientError(FloatingPointError):
    """A gradient went NaN or infinite; raised before the optimizer step."""


NONFINITE_ADVICE = (
    ". Checkpoints saved before this step are kept (ckpt_path=last resumes from the newest "
    "of them, passing over the diverged on_exception.ckpt); try a lower learning rate, "
    "trainer.detect_anomaly=true to find the operation, or training.skip_nonfinite=true "
    "to skip such batches.")


class NonFiniteGuard(pl.Callback):
    """Stop (``skip=False``) or skip the step (``skip=True``) on a non-finite loss or
    gradient; the number of skipped steps is kept in checkpoints and, when skipping,
    logged as ``train/skipped_nonfinite`` (cumulative, with each logged step's figures)."""

    def __init__(self, skip: bool = False):
        self.skip = bool(skip)
        self.skipped = 0
        self._named_trainables: list[tuple[str, nn.Parameter]] | None = None
        self._loss_message: str | None = None
        self._batch_idx = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self._batch_idx = batch_idx
        # Before the step, so a skip shows from the next logged step on; only on the
        # steps the logger writes (each self.log costs Lightning ~0.5 ms).
        if self.skip and logger_writes_this_step(trainer):
            pl_module.log("train/skipped_nonfinite", float(self.skipped))

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           loss: Tensor) -> None:
        if torch.isfinite(loss):
            return
        describe = getattr(pl_module, "describe_nonfinite_loss", None)
        detail = describe() if describe is not None else f"loss={float(loss.detach()):.4g}"
        message = (f"non-finite training loss at global step {trainer.global_step} "
                   f"(epoch {trainer.current_epoch}, batch {self._batch_idx}); {detail}")
        if not self.skip and trainer.world_size == 1:
            raise NonFiniteLossError(message + NONFINITE_ADVICE)
        # Skipping, or other ranks to agree with: backward still runs (DDP's gradient
        # all-reduce needs every rank) and on_before_optimizer_step decides. The step
        # still logs its (non-finite) figures: a step that logs nothing makes Lightning
        # repeat the previous step's values.
        self._loss_message = message

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        """The gradients are already all-reduced here, and the loss flag is reduced too,
        so every rank takes the same decision. A skipped step leaves the parameters and
        the optimizer's moments untouched (no gradient, no update)."""
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return  # float16 loss scaling skips overflowing steps itself
        if self._named_trainables is None:  # walking the module tree each step costs 50 us
            self._named_trainables = [(n, p) for n, p in pl_module.named_parameters()
                                      if p.requires_grad]
        grads = [(n, p.grad) for n, p in self._named_trainables if p.grad is not None]
        loss_message, self._loss_message = self._loss_message, None
        # A NaN or inf entry makes its tensor's sum non-finite, and sums cost a twentieth
        # of an entry-wise isfinite (160 us vs 3.5 ms per step for the MNIST benchmark
        # model); a sum that overflows from finite entries is settled entry-wise.
        finite = not grads or bool(torch.stack([g.sum() for _, g in grads]).isfinite().all())
        if not finite:
            finite = all(bool(g.isfinite().all()) for _, g in grads)
        bad = trainer.strategy.reduce_boolean_decision(
            loss_message is not None or not finite, all=False)
        if not bad:
            return
        if self.skip:
            optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            return
        if loss_message is not None:
            raise NonFiniteLossError(loss_message + NONFINITE_ADVICE)
        names = [n for n, g in grads if not g.isfinite().all()]
        if not names:
            raise NonFiniteLossError(
                f"non-finite training loss or gradient on another rank at global step "
                f"{trainer.global_step} (epoch {trainer.current_epoch}); see that rank's "
                "log." + NONFINITE_ADVICE)
        raise NonFiniteGradientError(
            f"non-finite gradient at global step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}) in {len(names)} parameter(s): {', '.join(names[:10])}"
            + (", ..." if len(names) > 10 else "") + NONFINITE_ADVICE)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint.setdefault(STATE_KEY, {})["skipped_nonfinite"] = self.skipped

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self.skipped = int((checkpoint.get(STATE_KEY) or {}).get("skipped_nonfinite", 0))
