"""Figures of what the model and its flow do, and callbacks that log them."""

from nfvae.viz.callbacks import VAEImageLogger

__all__ = ["VAEImageLogger"]
