"""Glow step for vectors (Kingma & Dhariwal 2018, "Glow: Generative Flow with
Invertible 1x1 Convolutions").

    z -> ActNorm -> LU linear map -> affine coupling,
    log|det| = sum log_scale + sum log_s + sum s,

the three parts in ``actnorm.py``, ``lu_linear.py`` and ``realnvp.py``. The linear
map mixes the coordinates, so the coupling keeps the same split on every layer.
Constraint and inverse: those of the parts (all closed form).
At initialisation, as in the paper: ActNorm standardises the first batch, the
linear map is a random rotation (log-det 0) and the coupling is the identity.
Amortized: the coupling's network takes the context; ActNorm and the linear map
are always shared. Cost per layer O(D^2 + D H + H^2).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from nfvae.flows.actnorm import ActNorm
from nfvae.flows.base import NetworkFlow
from nfvae.flows.lu_linear import LULinear
from nfvae.flows.realnvp import AffineCouplingFlow


class GlowStep(NetworkFlow):
    """ActNorm, LU linear map, affine coupling; see the module docstring."""

    has_inverse = True

    def __init__(self, dim: int, context_dim: int | None = None, amortized: bool = True,
                 hidden_dims: Sequence[int] = (128, 128), max_log_scale: float = 3.0):
        super().__init__(dim, context_dim, amortized)
        self.actnorm = ActNorm(dim)
        self.linear = LULinear(dim)
        self.coupling = AffineCouplingFlow(dim, context_dim, amortized, hidden_dims=hidden_dims,
                                           max_log_scale=max_log_scale)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.forward_repeated(z, context, 1)

    def forward_repeated(self, z: Tensor, context: Tensor | None,
                         repeats: int) -> tuple[Tensor, Tensor]:
        # checks before ActNorm initialises
        context = self.conditioner_context(z, context, repeats)
        z, log_det = self.actnorm(z)
        z, ld_linear = self.linear(z)
        z, ld_coupling = self.coupling.forward_repeated(z, context, repeats)
        return z, log_det + ld_linear + ld_coupling

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        context = self.conditioner_context(z, context)
        z, log_det = self.coupling.inverse(z, context)
        z, ld_linear = self.linear.inverse(z)
        z, ld_actnorm = self.actnorm.inverse(z)
        return z, log_det + ld_linear + ld_actnorm
