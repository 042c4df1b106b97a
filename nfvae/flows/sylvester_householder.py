"""Householder Sylvester flow, H-SNF (van den Berg et al. 2018).

    z' = z + Q R tanh(R~ Q^T z + b),   Q = H(v_1) H(v_2) ... H(v_H),
    H(v) = I - 2 v v^T / ||v||^2,

so Q is a D x D orthogonal matrix (M = D) from ``num_householder`` reflections.
Q is never formed: Q^T z and Q y are applied as H reflections, O(H D) per
example instead of the O(H D^2) of building the matrix. Orthogonality is exact
by construction, so the log-det of ``nfvae.flows.sylvester`` holds to rounding.

Raw parameters: r (D, D), r_diag (2, D), b (D,), v (H, D). Cost per layer
O(D^2 + H D). No closed-form inverse.
"""

from __future__ import annotations

from torch import Tensor

from nfvae.flows.householder import reflect_all, unit_vectors
from nfvae.flows.sylvester import SylvesterFlow


class HouseholderSylvesterFlow(SylvesterFlow):
    """Sylvester flow with Q a product of ``num_householder`` Householder reflections."""

    def __init__(self, dim: int, context_dim: int | None = None, amortized: bool = True,
                 num_householder: int = 8, shared_triangles: bool = True):
        if num_householder < 1:
            raise ValueError(
                f"sylvester_householder: num_householder must be >= 1, got {num_householder}")
        super().__init__(dim, context_dim, amortized, dim, {"v": (num_householder, dim)},
                         shared_triangles=shared_triangles)
        self.num_householder = num_householder

    def build_q(self, v: Tensor) -> Tensor:
        return unit_vectors(v)

    def apply_qt(self, q: Tensor, z: Tensor) -> Tensor:
        # Q^T = H(v_H) ... H(v_1): H(v_1) acts first. q (B, H, D) -> (B, H, 1, D):
        # each data point's vectors broadcast over its S samples.
        return reflect_all(z, q.unsqueeze(2))

    def apply_q(self, q: Tensor, y: Tensor) -> Tensor:
        return reflect_all(y, q.unsqueeze(2), reverse=True)
