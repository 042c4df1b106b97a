"""The data path of image flows: integer pixels -> continuous [0, 1) -> the flow's input.

Dequantization (Theis et al. 2016; Dinh et al. 2017, Sec. 4.1): pixels x in
{0, ..., K-1} (K = ``num_levels``, 256 for 8-bit images) become

    v = (x + u) / K,   u ~ U[0, 1)^D,

and the flow models a density p(v) on the scaled, continuous space. Each integer
image owns a cell of volume K^{-D} in v, so P(x) = int_cell p(v) dv and, by Jensen,

    log P(x) >= E_u[log p(v)] - D log K.

Bits per dimension on the discrete data, in the usual convention (for K = 256 it is
nll_bits = (-log p(v) + D log 256) / (D log 2)):

    bits/dim = (-log p(v) + D log K) / (D log 2),

which is log2(K) for the uniform density p = 1 on [0, 1)^D (8 bits for 8-bit images).

Before the flow, v is either centred, y = v - 1/2 (Glow), or sent through a logit
(RealNVP, alpha = 0.05 for CIFAR, 1e-6 for MNIST):

    y = logit(alpha + (1 - 2 alpha) v),
    log|dy/dv| = sum [log(1 - 2 alpha) - log s - log(1 - s)],  s = sigmoid(y),

counted in log p(v) like any other layer. Under the logit the model's support is
the box v in (-alpha/(1-2alpha), (1-alpha)/(1-2alpha))^D, slightly larger than
[0, 1)^D, so p(v) integrates to 1 over that box and to a little less over [0, 1)^D:
the bound above stays a bound.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from nfvae.flows.base import Flow
from nfvae.flows.image.base import per_image


def dequantize(x: Tensor, num_levels: int = 256,
               generator: torch.Generator | None = None) -> Tensor:
    """Integer-valued images x in {0, ..., K-1} (any dtype) -> v = (x + u) / K in [0, 1)."""
    if num_levels < 2:
        raise ValueError(f"num_levels must be >= 2, got {num_levels}")
    x = x.to(torch.get_default_dtype()) if not x.is_floating_point() else x
    if x.numel() and (x.min() < 0 or x.max() > num_levels - 1 or (x != x.round()).any()):
        raise ValueError(f"dequantize expects integers in [0, {num_levels - 1}], got values "
                         f"in [{x.min().item()}, {x.max().item()}]; scale the images to "
                         "integer levels first")
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + u) / num_levels


def bits_per_dim(log_pv: Tensor, num_dims: int, num_levels: int = 256) -> Tensor:
    """(-log p(v) + D log K) / (D log 2): the discrete data's bits/dim, for log p(v)
    the density of the [0, 1)-scaled, dequantized data (see the module docstring)."""
    return (-log_pv + num_dims * math.log(num_levels)) / (num_dims * math.log(2.0))


class Center(Flow):
    """y = v - 1/2 in the data direction (``inverse``); log|det| = 0."""

    has_inverse = True

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z + 0.5, z.new_zeros(z.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z - 0.5, z.new_zeros(z.shape[0])


class Logit(Flow):
    """y = logit(alpha + (1 - 2 alpha) v) in the data direction (``inverse``);
    ``forward`` maps y back to v = (sigmoid(y) - alpha) / (1 - 2 alpha)."""

    has_inverse = True

    def __init__(self, alpha: float):
        super().__init__()
        if not 0 < alpha < 0.5:
            raise ValueError(f"logit alpha must be in (0, 0.5), got {alpha}")
        self.alpha = alpha

    def _log_det_dv_dy(self, y: Tensor) -> Tensor:
        # log s + log(1 - s) = -softplus(-y) - softplus(y), stable for large |y|.
        elementwise = -F.softplus(-y) - F.softplus(y) - math.log1p(-2 * self.alpha)
        return per_image(elementwise, y)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        v = (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)
        return v, self._log_det_dv_dy(z)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s = self.alpha + (1 - 2 * self.alpha) * z
        if (s <= 0).any() or (s >= 1).any():
            raise ValueError("Logit: input outside the support (-alpha/(1-2alpha), "
                             f"(1-alpha)/(1-2alpha)) for alpha={self.alpha}; images must be "
                             "scaled to [0, 1)")
        y = torch.log(s) - torch.log1p(-s)
        return y, -self._log_det_dv_dy(y)


def preprocessing(logit_alpha: float | None) -> Flow:
    """The map v -> y before the flow: ``Logit(alpha)``, or ``Center()`` for None."""
    return Center() if logit_alpha is None else Logit(logit_alpha)
