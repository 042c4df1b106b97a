"""``train/grad_norm``: the global L2 norm of the gradients, on the steps the logger writes.

||g|| = sqrt(sum_p ||grad p||^2) over every parameter with a gradient, taken in
``on_before_optimizer_step``: after backward (and DDP's all-reduce, so every rank sees
the same value), before gradient clipping and the optimizer's update, so a spike shows
at its full size. It is computed only on the steps Lightning writes
(``trainer.log_every_n_steps``; ``nfvae.logging_steps.logger_writes_this_step``), so the other
steps pay nothing; ``benchmarks/bench_grad_norm.py`` measures the cost. The
diagnosis reads the series back for spikes (``nfvae.diagnose.scalars.grad_norm_spikes``).
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor

from nfvae.logging_steps import logger_writes_this_step

TAG = "train/grad_norm"


def global_grad_norm(parameters) -> Tensor:
    """sqrt(sum ||grad||^2) of the parameters that have a gradient (0 when none has);
    inf or nan when a gradient is not finite."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)  # one fused kernel per device and dtype
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))


class GradNormLogger(pl.Callback):
    """Logs ``train/grad_norm`` on the steps the logger writes."""

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer) -> None:
        if trainer.logger is None or not logger_writes_this_step(trainer):
            return
        pl_module.log(TAG, global_grad_norm(pl_module.parameters()), on_step=True,
                      on_epoch=False)
