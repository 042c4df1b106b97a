"""Activation normalisation, ActNorm (Kingma & Dhariwal 2018, "Glow").

    z' = exp(log_scale) * z + shift,   log|det dz'/dz| = sum log_scale,

per coordinate, shared by all data points. Data-dependent initialisation: on the
first forward call, log_scale and shift are set so that the output of that batch
has zero mean and unit variance per coordinate (on a first inverse call, so that
the inverse's output has); coordinates with no spread keep scale 1. The
``initialized`` flag is a buffer, saved in checkpoints, so a loaded model does
not re-initialise. Inverse in closed form. Cost O(D).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nfvae.flows.base import Flow


class ActNorm(Flow):
    """Per-coordinate affine map with data-dependent initialisation."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.shift = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, z: Tensor, inverse: bool) -> None:
        mean = z.mean(0)
        std = z.std(0, unbiased=False) if z.shape[0] > 1 else torch.ones_like(mean)
        # A coordinate without spread (or a batch of one) keeps scale 1.
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        if inverse:  # z = (z' - shift) e^{-log_scale} should come out standardised
            self.log_scale.copy_(std.log())
            self.shift.copy_(mean)
        else:        # z' = e^{log_scale} z + shift should come out standardised
            self.log_scale.copy_(-std.log())
            self.shift.copy_(-mean / std)
        self.initialized.fill_(True)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        if not self.initialized:
            self._initialize(z, inverse=False)
        z_new = z * self.log_scale.exp() + self.shift
        return z_new, self.log_scale.sum().expand(z.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        if not self.initialized:
            self._initialize(z, inverse=True)
        z0 = (z - self.shift) * (-self.log_scale).exp()
        return z0, (-self.log_scale.sum()).expand(z.shape[0])
