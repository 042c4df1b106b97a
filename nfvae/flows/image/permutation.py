"""Fixed channel permutations, Glow's alternatives to the 1x1 convolution
(Kingma & Dhariwal 2018, Sec. 3.2 and Fig. 3):

    reverse:  x'[c] = x[C - 1 - c]     (RealNVP's alternation of halves),
    shuffle:  x'[c] = x[perm[c]]       (one random permutation, fixed at construction),

applied in the data direction; log|det| = 0. ``channel_mixer`` builds any of the
three options by name.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nfvae.flows.base import Flow
from nfvae.flows.image.base import ImageFlow
from nfvae.flows.image.invconv import InvConv1x1

PERMUTATIONS = ("invconv", "reverse", "shuffle")


class ChannelPermutation(ImageFlow):
    """Reorders channels by ``perm`` in the data direction; log-det 0."""

    def __init__(self, perm: Tensor):
        super().__init__(len(perm))
        if not torch.equal(perm.sort().values, torch.arange(len(perm))):
            raise ValueError(f"not a permutation of 0..{len(perm) - 1}: {perm.tolist()}")
        self.register_buffer("perm", perm.clone())
        self.register_buffer("inverse_perm", perm.argsort())

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        return z[:, self.inverse_perm], z.new_zeros(z.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        return z[:, self.perm], z.new_zeros(z.shape[0])


def channel_mixer(kind: str, channels: int) -> Flow:
    """'invconv' (learned LU 1x1 convolution), 'reverse' or 'shuffle'."""
    if kind == "invconv":
        return InvConv1x1(channels)
    if kind == "reverse":
        return ChannelPermutation(torch.arange(channels - 1, -1, -1))
    if kind == "shuffle":
        return ChannelPermutation(torch.randperm(channels))
    raise ValueError(f"permutation must be one of {PERMUTATIONS}, got {kind!r}")
