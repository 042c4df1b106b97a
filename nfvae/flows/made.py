"""MADE (Germain, Gregor, Murray & Larochelle 2015, "MADE: Masked Autoencoder for
Distribution Estimation"), the autoregressive network inside IAF.

Every input z_i gets a degree (its position in the ordering, 1..D), every hidden
unit a degree in 0..D-1, and connections are masked so that output i only sees
inputs of smaller degree: output_i = f(z_<i, context). Hidden units of degree 0
see only the context, which enters the first hidden layer unmasked (IAF's h).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nfvae.flows.conditioner import check_hidden_dims


class MaskedLinear(nn.Linear):
    """nn.Linear whose weight is multiplied by a fixed 0/1 mask (out, in)."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """z (B, D), context (B, H) or None -> (B, num_outputs, D), autoregressive in ``order``.

    ``order`` is a permutation of 0..D-1: z[:, order[0]] comes first. Output
    [:, :, i] depends only on the inputs that come before i in that order.
    The output layer starts at zero weights, its bias at ``output_bias``.
    """

    def __init__(self, dim: int, hidden_dims: Sequence[int], num_outputs: int,
                 context_dim: int | None = None, order: Tensor | None = None,
                 output_bias: Sequence[float] | None = None):
        super().__init__()
        hidden = check_hidden_dims(hidden_dims, "MADE")
        order = torch.arange(dim) if order is None else torch.as_tensor(order)
        if sorted(order.tolist()) != list(range(dim)):
            raise ValueError(f"MADE: order must be a permutation of 0..{dim - 1}, got {order}")
        self.dim = dim
        self.num_outputs = num_outputs
        in_degree = torch.empty(dim, dtype=torch.long)
        in_degree[order] = torch.arange(1, dim + 1)
        self.register_buffer("in_degree", in_degree, persistent=False)
        degrees = [in_degree]
        layers = []
        for width in hidden:
            # Degrees 0..D-1 in turn: every ordering position has units that can see it.
            degree = torch.arange(width) % dim
            mask = (degree[:, None] >= degrees[-1][None, :]).float()
            layers.append(MaskedLinear(degrees[-1].numel(), width, mask))
            degrees.append(degree)
        self.layers = nn.ModuleList(layers)
        self.context_layer = (nn.Linear(context_dim, hidden[0], bias=False)
                              if context_dim else None)
        out_mask = (in_degree[:, None] > degrees[-1][None, :]).float().repeat(num_outputs, 1)
        self.out = MaskedLinear(hidden[-1], num_outputs * dim, out_mask)
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            bias = torch.zeros(num_outputs, 1) if output_bias is None else (
                torch.as_tensor(output_bias, dtype=torch.float32).view(num_outputs, 1))
            self.out.bias.copy_(bias.expand(num_outputs, dim).reshape(-1))

    def forward(self, z: Tensor, context: Tensor | None = None, repeats: int = 1) -> Tensor:
        """z (S*B, D) with row s*B + b belonging to context row b (B, H); S = ``repeats``."""
        h = self.layers[0](z)
        if self.context_layer is not None:
            # The context term once per data point, broadcast over its S samples.
            shared = self.context_layer(context)
            h = (h.view(repeats, *shared.shape) + shared).view(h.shape)
        h = F.elu(h)
        for layer in self.layers[1:]:
            h = F.elu(layer(h))
        return self.out(h).view(z.shape[0], self.num_outputs, self.dim)
