"""Rational-quadratic neural spline coupling (Durkan, Bekasov, Murray & Papamakarios
2019, "Neural Spline Flows").

Split z into a conditioning half z_a and a transformed half z_b (swapped on odd
layers); every coordinate of z_b goes through its own monotonic
rational-quadratic spline with K bins on [-B, B] and identity tails, whose knots
and derivatives a network computes from z_a and the context:

    z_b'_i = RQS(z_b_i; theta_i(z_a, context)),   theta_i: K widths, K heights, K - 1 slopes,
    log|det dz'/dz| = sum_i log RQS'(z_b_i).

Constraint: positive bin sizes (softmax) and slopes (softplus) make each spline
strictly increasing, hence invertible; the inverse is closed form (a quadratic
per bin, ``nfvae.flows.rational_quadratic``). The network's output layer starts
at zero, which gives equal bins with unit slopes: the identity.
Amortized: the context is an extra input of the network; global: z_a only.
Cost per layer O(D H + H^2 + D K) for hidden size H.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from nfvae.flows.base import NetworkFlow
from nfvae.flows.conditioner import ConditionerMLP
from nfvae.flows.coupling import CouplingSplit
from nfvae.flows.rational_quadratic import rational_quadratic_spline


class SplineCouplingFlow(NetworkFlow):
    """Rational-quadratic spline coupling; see the module docstring."""

    has_inverse = True
    alternates = True

    def __init__(self, dim: int, context_dim: int | None = None, amortized: bool = True,
                 hidden_dims: Sequence[int] = (128, 128), num_bins: int = 8,
                 tail_bound: float = 3.0, layer_index: int = 0):
        super().__init__(dim, context_dim, amortized)
        if num_bins < 2:
            raise ValueError(f"spline: num_bins must be >= 2, got {num_bins}")
        if tail_bound <= 0:
            raise ValueError(f"spline: tail_bound must be > 0, got {tail_bound}")
        self.split = CouplingSplit(dim, layer_index, "spline")
        self.num_bins = num_bins
        self.tail_bound = float(tail_bound)
        self.net = ConditionerMLP(self.split.num_kept, self.context_dim, hidden_dims,
                                  self.split.num_changed * (3 * num_bins - 1), owner="spline")

    def _spline(self, z: Tensor, context: Tensor | None, inverse: bool,
                repeats: int = 1) -> tuple[Tensor, Tensor]:
        context = self.conditioner_context(z, context, repeats)
        z_a, z_b = self.split.split(z)
        theta = self.net(z_a, context, repeats).view(z.shape[0], self.split.num_changed,
                                            3 * self.num_bins - 1)
        k = self.num_bins
        z_b, log_slope = rational_quadratic_spline(
            z_b, theta[..., :k], theta[..., k:2 * k], theta[..., 2 * k:],
            self.tail_bound, inverse=inverse)
        return self.split.join(z_a, z_b), log_slope.sum(-1)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._spline(z, context, inverse=False)

    def forward_repeated(self, z: Tensor, context: Tensor | None,
                         repeats: int) -> tuple[Tensor, Tensor]:
        # The network takes the context's first-layer term once per data point.
        return self._spline(z, context, inverse=False, repeats=repeats)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._spline(z, context, inverse=True)
