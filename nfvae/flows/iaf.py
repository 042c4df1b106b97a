"""Inverse autoregressive flow, IAF (Kingma, Salimans, Jozefowicz, Chen, Sutskever &
Welling 2016, "Improved Variational Inference with Inverse Autoregressive Flow").

One step, with [m, s] = MADE(z, h) autoregressive in z (h: the encoder's context):

    sigma = sigmoid(s),   z' = sigma * z + (1 - sigma) * m,
    log|det dz'/dz| = sum_i log sigma_i = -sum_i softplus(-s_i),

since dz'_i/dz_j = 0 for j after i in the ordering (triangular Jacobian).
Constraint: sigma in (0, 1) by the sigmoid, so every step is invertible.
The ordering is reversed on odd layers (``layer_index``), as in the paper.

Initialisation as in the paper's "forget gate bias": the MADE output layer starts
at zero weights and the bias of s at ``forget_bias`` (default 2), so each step
starts at z' = sigmoid(2) z (about 0.88 z), close to the identity.
Amortized: h enters the first MADE layer; global: no context input.
Inverse: sequential, D passes of the MADE (z_i = (z'_i - (1 - sigma_i) m_i) / sigma_i
in order). Cost per layer O(D H + H^2) for MADE hidden size H.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from nfvae.flows.base import NetworkFlow
from nfvae.flows.made import MADE


class IAFFlow(NetworkFlow):
    """One gated IAF step; see the module docstring."""

    has_inverse = True
    alternates = True

    def __init__(self, dim: int, context_dim: int | None = None, amortized: bool = True,
                 hidden_dims: Sequence[int] = (128, 128), forget_bias: float = 2.0,
                 layer_index: int = 0):
        super().__init__(dim, context_dim, amortized)
        order = torch.arange(dim)
        if layer_index % 2 == 1:
            order = order.flip(0)
        self.made = MADE(dim, hidden_dims, num_outputs=2, context_dim=self.context_dim,
                         order=order, output_bias=(0.0, forget_bias))
        self.register_buffer("order", order, persistent=False)

    def _gate(self, z: Tensor, context: Tensor | None, repeats: int = 1
              ) -> tuple[Tensor, Tensor]:
        return self.made(z, context, repeats).unbind(1)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.forward_repeated(z, context, 1)

    def forward_repeated(self, z: Tensor, context: Tensor | None,
                         repeats: int) -> tuple[Tensor, Tensor]:
        # MADE adds the context's first-layer term once per data point, not per sample.
        context = self.conditioner_context(z, context, repeats)
        m, s = self._gate(z, context, repeats)
        z_new = torch.sigmoid(s) * z + torch.sigmoid(-s) * m
        return z_new, -F.softplus(-s).sum(-1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        context = self.conditioner_context(z, context)
        z0 = torch.zeros_like(z)
        # After pass k the first k+1 coordinates in the ordering are exact.
        for i in self.order.tolist():
            m, s = self._gate(z0, context)
            z0 = z0.clone()
            z0[:, i] = (z[:, i] - torch.sigmoid(-s[:, i]) * m[:, i]) / torch.sigmoid(s[:, i])
        _, s = self._gate(z0, context)
        return z0, F.softplus(-s).sum(-1)
