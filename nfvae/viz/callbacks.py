"""Thin callbacks that send the figures of ``nfvae.viz.figures`` to TensorBoard."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from nfvae.viz.figures import (
    PCA2D,
    figure_to_image,
    image_grid,
    latent_before_after_figure,
    reconstruction_grid,
)


def tensorboard_writer(trainer: pl.Trainer):
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class VAEImageLogger(pl.Callback):
    """Each ``every_n_epochs`` validation epochs, on rank 0, log:

    ``images/reconstructions`` (originals above reconstructions),
    ``images/samples`` (5x5 prior samples from fixed noise),
    ``images/latent_before_after_flow`` (z0 and zK of validation points by label;
    the two latent dimensions when D = 2, else a PCA fitted once), and the
    histogram ``latent/sum_log_det`` of the per-example summed log-det.
    """

    def __init__(self, every_n_epochs: int = 1, num_reconstructions: int = 8,
                 num_latent_points: int = 500, upscale: int = 1):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.num_reconstructions = num_reconstructions
        self.num_latent_points = num_latent_points
        self.upscale = upscale
        self.pca: PCA2D | None = None
        self.prior_noise: torch.Tensor | None = None

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule):
        writer = tensorboard_writer(trainer)
        if writer is None or trainer.sanity_checking:
            return
        if trainer.current_epoch % self.every_n_epochs != 0:
            return
        x, y = trainer.datamodule.split("val")
        x = x[: self.num_latent_points].to(pl_module.device)
        y = y[: self.num_latent_points]
        model = pl_module.model
        step = trainer.global_step
        was_training = model.training
        model.eval()
        with torch.no_grad():
            terms = model(x)
            likelihood = model.likelihood
            n = self.num_reconstructions
            recon = likelihood.mean(terms.decoder_params[0, :n])
            writer.add_image("images/reconstructions",
                             reconstruction_grid(x[:n], recon, self.upscale), step)
            if self.prior_noise is None:
                generator = torch.Generator().manual_seed(0)
                self.prior_noise = torch.randn(25, model.latent_dim, generator=generator)
            samples = likelihood.mean(model.decoder(self.prior_noise.to(pl_module.device)))
            writer.add_image("images/samples", image_grid(samples, 5, self.upscale), step)
            z0, zK = terms.z0[0], terms.zK[0]
            if self.pca is None:
                self.pca = PCA2D(z0)
            axes = ("z_1", "z_2") if model.latent_dim <= 2 else ("PC 1 of z0", "PC 2 of z0")
            figure = latent_before_after_figure(self.pca(z0), self.pca(zK), y, axes)
            writer.add_image("images/latent_before_after_flow", figure_to_image(figure), step)
            writer.add_histogram("latent/sum_log_det", terms.sum_log_det[0].float().cpu(), step)
        model.train(was_training)
