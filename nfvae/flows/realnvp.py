"""Affine coupling, RealNVP (Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation
using Real NVP").

Split z into a conditioning part z_a and a transformed part z_b (halves, swapped
on odd layers so that the stack alternates masks):

    z_a' = z_a,   z_b' = z_b * exp(s) + t,   [s_raw, t] = NN(z_a, context),
    s = c tanh(s_raw / c)    (a soft clamp: |s| < c = ``max_log_scale``),
    log|det dz'/dz| = sum s.

Constraint: exp(s) > 0, and the clamp keeps one layer from scaling by more than
e^c. Inverse in closed form: z_b = (z_b' - t) exp(-s). The network's output
layer starts at zero, so every layer starts as the identity.
Amortized: the context is an extra input of NN; global: NN sees z_a only.
Cost per layer O(D H + H^2) for hidden size H.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from nfvae.flows.base import NetworkFlow
from nfvae.flows.conditioner import ConditionerMLP
from nfvae.flows.coupling import CouplingSplit, soft_clamp


class AffineCouplingFlow(NetworkFlow):
    """RealNVP affine coupling; see the module docstring."""

    has_inverse = True
    alternates = True

    def __init__(self, dim: int, context_dim: int | None = None, amortized: bool = True,
                 hidden_dims: Sequence[int] = (128, 128), max_log_scale: float = 3.0,
                 layer_index: int = 0):
        super().__init__(dim, context_dim, amortized)
        if max_log_scale <= 0:
            raise ValueError(f"realnvp: max_log_scale must be > 0, got {max_log_scale}")
        self.split = CouplingSplit(dim, layer_index, "realnvp")
        self.max_log_scale = max_log_scale
        self.net = ConditionerMLP(self.split.num_kept, self.context_dim, hidden_dims,
                                  2 * self.split.num_changed, owner="realnvp")

    def _scale_shift(self, z_a: Tensor, context: Tensor | None,
                     repeats: int = 1) -> tuple[Tensor, Tensor]:
        s_raw, t = self.net(z_a, context, repeats).chunk(2, dim=-1)
        return soft_clamp(s_raw, self.max_log_scale), t

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.forward_repeated(z, context, 1)

    def forward_repeated(self, z: Tensor, context: Tensor | None,
                         repeats: int) -> tuple[Tensor, Tensor]:
        # The network takes the context's first-layer term once per data point.
        context = self.conditioner_context(z, context, repeats)
        z_a, z_b = self.split.split(z)
        s, t = self._scale_shift(z_a, context, repeats)
        return self.split.join(z_a, z_b * torch.exp(s) + t), s.sum(-1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        context = self.conditioner_context(z, context)
        z_a, z_b = self.split.split(z)
        s, t = self._scale_shift(z_a, context)
        return self.split.join(z_a, (z_b - t) * torch.exp(-s)), -s.sum(-1)
