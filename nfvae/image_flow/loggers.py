"""The TensorBoard callback of image flows: ``nfvae.image_flow.figures`` each due
validation epoch, with the VAE callbacks' rules (rank 0, eval mode, the figures at the
``val/*`` step and flushed before that epoch's checkpoint, so they survive kill and
resume; ``nfvae.viz.loggers``)."""

from __future__ import annotations

import torch

from nfvae.image_flow.figures import image_flow_figures
from nfvae.viz.loggers import _DrawingCallback, log_figure_set


class ImageFlowLogger(_DrawingCallback):
    """Samples at ``temperatures`` from noise fixed at the first drawing (so epochs
    compare), round trip, per-level log-dets, what each level encodes and latent
    interpolations, on the first ``num_points`` validation images."""

    def __init__(self, every_n_epochs: int = 1, temperatures=(0.5, 0.7, 0.8, 1.0),
                 num_points: int = 128, upscale: int = 1, num_level_images: int = 8,
                 num_interpolations: int = 4, seed: int = 0):
        super().__init__(every_n_epochs)
        if num_points < 2:
            raise ValueError(f"num_points must be >= 2 (interpolations need pairs), "
                             f"got {num_points}")
        if not temperatures or any(float(t) <= 0 for t in temperatures):
            raise ValueError(f"temperatures must be positive, got {list(temperatures)}")
        self.temperatures = [float(t) for t in temperatures]
        self.num_points, self.upscale = num_points, upscale
        self.num_level_images, self.num_interpolations = num_level_images, num_interpolations
        self.seed = seed

    def draw(self, trainer, pl_module, writer, step):
        x, _ = trainer.datamodule.split("val")
        # Drawn afresh from the seed each time, so a resumed run draws the same noise.
        generator = torch.Generator().manual_seed(self.seed)
        sample_noise = pl_module.latent_noise(25, generator)
        level_noise = pl_module.latent_noise(self.num_level_images, generator)
        figures = image_flow_figures(
            pl_module, x[: self.num_points], sample_noise, level_noise, self.temperatures,
            self.upscale, self.num_level_images, self.num_interpolations, self.seed)
        log_figure_set(writer, figures, step)
