"""Figures of what the model and its flow do, and callbacks that log them.

Importing this package leaves matplotlib's backend alone (a notebook keeps its own);
the commands, which draw only into files and TensorBoard, choose Agg
(``nfvae.cli.use_file_backend``).
"""

from nfvae.viz.loggers import (
    EmbeddingProjector,
    LatentSpaceLogger,
    ToyDensityLogger,
    VAEImageLogger,
)

__all__ = ["EmbeddingProjector", "LatentSpaceLogger", "ToyDensityLogger", "VAEImageLogger"]
