"""Thin callbacks that send the figures of ``nfvae.viz`` to TensorBoard.

Each one draws after the first validation epoch, every ``every_n_epochs``-th and
the last, on rank 0 only, with the model in eval mode and no gradients; the
drawing itself lives in pure functions (``nfvae.viz.vae``, ``nfvae.viz.toy``)
that visualize.py calls too.

Figures go to the step of the epoch's ``val/*`` scalars, one below the global step
that epoch's checkpoint records, and are flushed before it is saved: a run resumed
from that checkpoint hides the steps from the checkpoint's on (TensorBoard's
``purge_step``, for what the interrupted run logged after it), so they stay visible.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from google.protobuf import text_format
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from nfvae.tb_logger import figure_tag
from nfvae.viz.figures import PCA2D, figure_to_image
from nfvae.viz.toy import ToyFigureSettings, toy_figures
from nfvae.viz.vae import FigureSet, LatentFigureSettings, vae_latent_figures, vae_sample_images


def tensorboard_writer(trainer: pl.Trainer):
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def check_every_n_epochs(every_n_epochs: int) -> int:
    if every_n_epochs < 1:
        raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
    return every_n_epochs


def should_draw(trainer: pl.Trainer, every_n_epochs: int) -> bool:
    """After the first epoch (the start), every n-th epoch, and the last one."""
    if trainer.sanity_checking:
        return False
    epoch = trainer.current_epoch
    last = trainer.max_epochs is not None and epoch == trainer.max_epochs - 1
    return epoch == 0 or (epoch + 1) % every_n_epochs == 0 or last


def validation_step_of(trainer: pl.Trainer) -> int:
    """The step Lightning logs the current validation epoch's ``val/*`` scalars at."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def log_figure_set(writer, figures: FigureSet, step: int) -> None:
    """Every figure and image of the set as an image, scalars, histograms; closes figures.

    Pictures and histograms go to the ``viz`` group, scalars (measured on validation
    data) to ``val``, so TensorBoard's scalar pages open on the curves
    (``nfvae.tb_logger``)."""
    for tag, figure in figures.figures.items():
        writer.add_image(figure_tag(tag), figure_to_image(figure), step)
    for tag, image in figures.images.items():
        writer.add_image(figure_tag(tag), image, step)
    for tag, value in figures.scalars.items():
        writer.add_scalar(f"val/{tag}", value, step)
    for tag, values in figures.histograms.items():
        writer.add_histogram(figure_tag(tag), values, step)


class _DrawingCallback(pl.Callback):
    """Runs ``draw(trainer, module, writer, step)`` when due, on rank 0, in eval mode."""

    def __init__(self, every_n_epochs: int):
        super().__init__()
        self.every_n_epochs = check_every_n_epochs(every_n_epochs)

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, writer, step: int):
        raise NotImplementedError

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule):
        writer = tensorboard_writer(trainer)
        if writer is None or not should_draw(trainer, self.every_n_epochs):
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                self.draw(trainer, pl_module, writer, validation_step_of(trainer))
            writer.flush()
        finally:
            pl_module.train(was_training)


class VAEImageLogger(_DrawingCallback):
    """``viz/images/reconstructions`` (originals above reconstructions),
    ``viz/images/samples`` (5x5 prior samples from fixed noise),
    ``viz/images/latent_before_after_flow`` (z0 and zK of validation points by label;
    the two latent dimensions when D = 2, else a PCA fitted once), and the
    histogram ``viz/latent/sum_log_det`` of the per-example summed log-det.
    """

    def __init__(self, every_n_epochs: int = 1, num_reconstructions: int = 8,
                 num_latent_points: int = 500, upscale: int = 1):
        super().__init__(every_n_epochs)
        self.num_reconstructions = num_reconstructions
        self.num_latent_points = num_latent_points
        self.upscale = upscale
        self.pca: PCA2D | None = None
        self.prior_noise: torch.Tensor | None = None

    def draw(self, trainer, pl_module, writer, step):
        x, y = trainer.datamodule.split("val")
        model = pl_module.model
        if self.prior_noise is None:
            generator = torch.Generator().manual_seed(0)
            self.prior_noise = torch.randn(25, model.latent_dim, generator=generator)
        figures, self.pca = vae_sample_images(
            model, x[: self.num_latent_points], y[: self.num_latent_points],
            self.num_reconstructions, self.upscale, self.prior_noise, self.pca)
        log_figure_set(writer, figures, step)


class LatentSpaceLogger(_DrawingCallback):
    """The figures of ``nfvae.viz.vae.vae_latent_figures`` on the first ``num_points``
    validation points: images ``viz/latent/active_units``, ``viz/latent/trajectories``,
    ``viz/latent/log_det_per_layer``, ``viz/latent/interpolations``,
    ``viz/latent/traversals`` and, for latent size 2, ``viz/latent/posteriors`` and
    ``viz/latent/aggregate_posterior``; scalars ``val/latent/active_units_z0``,
    ``val/latent/active_units_zK``, ``val/latent/kl_q0``; histograms
    ``viz/latent/log_det/layer_<k>``. Options: ``LatentFigureSettings``."""

    def __init__(self, every_n_epochs: int = 5, num_points: int = 500, **settings):
        super().__init__(every_n_epochs)
        if num_points < 2:
            raise ValueError(f"num_points must be >= 2, got {num_points}")
        self.num_points = num_points
        self.settings = LatentFigureSettings(**settings)

    def draw(self, trainer, pl_module, writer, step):
        x, y = trainer.datamodule.split("val")
        figures = vae_latent_figures(pl_module.model, x[: self.num_points],
                                     y[: self.num_points], self.settings)
        log_figure_set(writer, figures, step)


class EmbeddingProjector(_DrawingCallback):
    """TensorBoard's embedding projector: the posterior means mu of the first
    ``num_points`` validation points, with their labels as metadata and the images
    as sprites (tag ``latent_mean``)."""

    def __init__(self, every_n_epochs: int = 10, num_points: int = 500):
        super().__init__(every_n_epochs)
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        self.num_points = num_points

    def draw(self, trainer, pl_module, writer, step):
        x, y = trainer.datamodule.split("val")
        x, y = x[: self.num_points], y[: self.num_points]
        mu = pl_module.model.encode(x.to(pl_module.device))[0].float().cpu()
        sprites = x.float().clamp(0, 1)
        if sprites.dim() == 4 and sprites.shape[1] == 1:  # the projector wants RGB sprites
            sprites = sprites.expand(-1, 3, -1, -1)
        logdir = Path(writer.get_logdir())
        earlier = read_projector_config(logdir)
        writer.add_embedding(mu, metadata=[str(int(v)) for v in y], label_img=sprites,
                             global_step=step, tag="latent_mean")
        write_projector_config(logdir, earlier)


_PROJECTOR_CONFIG = "projector_config.pbtxt"


def read_projector_config(logdir: Path):
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    config = ProjectorConfig()
    path = logdir / _PROJECTOR_CONFIG
    if path.is_file():
        text_format.Parse(path.read_text(), config)
    return config


def _embedding_step(embedding) -> int:
    # tensor_path starts with the zero-padded step: 00040/latent_mean/tensors.tsv
    head = embedding.tensor_path.split("/")[0]
    return int(head) if head.isdigit() else -1


def write_projector_config(logdir: Path, earlier) -> None:
    """Rewrite the projector's config newest embedding first, since the projector opens
    on the first one listed; keep the embeddings listed before (torch's writer lists
    only its own, so a resumed run's writer would drop the earlier ones)."""
    config = read_projector_config(logdir)
    entries = {e.tensor_name: e for e in earlier.embeddings}
    entries.update({e.tensor_name: e for e in config.embeddings})
    ordered = sorted(entries.values(), key=_embedding_step, reverse=True)
    del config.embeddings[:]
    config.embeddings.extend(ordered)
    (logdir / _PROJECTOR_CONFIG).write_text(text_format.MessageToString(config))


class ToyDensityLogger(_DrawingCallback):
    """For 2-D density experiments (``nfvae.toy``): the figures of
    ``nfvae.viz.toy.toy_figures`` as images ``viz/toy/target_vs_learned``,
    ``viz/toy/layer_strip``, ``viz/toy/samples_over_target`` and ``viz/toy/layer_geometry``.
    The losses and KL are logged by the module itself."""

    def __init__(self, every_n_epochs: int = 5, grid_size: int = 100,
                 max_strip_panels: int = 9, max_geometry_panels: int = 8,
                 num_samples: int = 2000):
        super().__init__(every_n_epochs)
        self.settings = ToyFigureSettings(grid_size=grid_size, max_strip_panels=max_strip_panels,
                                          max_geometry_panels=max_geometry_panels,
                                          num_samples=num_samples)

    def draw(self, trainer, pl_module, writer, step):
        kl = trainer.callback_metrics.get("val/kl")
        note = f"epoch {trainer.current_epoch}" + (
            "" if kl is None else f", val KL {float(kl):.3f} nats")
        figures = toy_figures(pl_module.flow, pl_module.target, pl_module.base_log_prob,
                              pl_module.flow_name, self.settings, note=note)
        log_figure_set(writer, FigureSet(figures=figures), step)
