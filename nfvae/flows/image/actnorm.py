"""ActNorm over channels (Kingma & Dhariwal 2018, "Glow", Sec. 3.1):

    x'[c, i, j] = exp(log_scale[c]) x[c, i, j] + shift[c],
    log|det| = H W sum_c log_scale[c].

The vector ``ActNorm`` with one coordinate per channel: its parameters, its
``initialized`` buffer and its data-dependent initialisation (``batch_moments``,
all-reduced under DDP) run on the (B H W, C) rows of the image, so the first batch
comes out with zero mean and unit variance per channel. As in every density model
here, the data direction is ``inverse``; the initialisation runs on the first
inverse pass inside ``initialize_by_inverse``. ``forward`` (sampling) never
initialises: noise is no statistic of the data. Cost O(B C H W).
"""

from __future__ import annotations

from torch import Tensor

from nfvae.flows.actnorm import ActNorm
from nfvae.flows.image.base import check_image


def channel_rows(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B H W, C): one row per pixel, one column per channel."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


class ActNorm2d(ActNorm):
    """Per-channel affine map with data-dependent initialisation; see the module docstring."""

    def check_z(self, z: Tensor) -> None:
        check_image(z, self.dim, "ActNorm2d")

    def _log_det(self, x: Tensor) -> Tensor:
        return (x.shape[2] * x.shape[3] * self.log_scale.sum()).expand(x.shape[0])

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        x = z * self.log_scale.exp()[:, None, None] + self.shift[:, None, None]
        return x, self._log_det(z)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        if self._initialize_on_inverse and not self.initialized:
            self._initialize(channel_rows(z), inverse=True)
        x = (z - self.shift[:, None, None]) * (-self.log_scale).exp()[:, None, None]
        return x, -self._log_det(z)
