"""Figures of what the model and its flow do, and callbacks that log them."""

import matplotlib

matplotlib.use("Agg")  # before any pyplot import: no display on training machines

from nfvae.viz.callbacks import (  # noqa: E402
    EmbeddingProjector,
    LatentSpaceLogger,
    ToyDensityLogger,
    VAEImageLogger,
)

__all__ = ["EmbeddingProjector", "LatentSpaceLogger", "ToyDensityLogger", "VAEImageLogger"]
