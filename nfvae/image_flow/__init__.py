"""Image flows (Glow, RealNVP) as a trainable model kind: the LightningModule, its data
path from 8-bit images, and the callback that draws what it learned."""

from nfvae.image_flow.data import bits_per_dim, image_levels
from nfvae.image_flow.module import FlowDensityModule

__all__ = ["FlowDensityModule", "bits_per_dim", "image_levels"]
