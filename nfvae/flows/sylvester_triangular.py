"""Triangular Sylvester flow, T-SNF (van den Berg et al. 2018).

    z' = z + Q R tanh(R~ Q^T z + b),   Q = I (even layers) or the reversal
    permutation (odd layers),

so M = D and no orthogonalisation is needed; alternating the permutation, as the
paper does, lets the triangular structure run both ways through the stack.
Raw parameters: r (D, D), r_diag (2, D), b (D,). Cost per layer O(D^2).
No closed-form inverse.
"""

from __future__ import annotations

from torch import Tensor

from nfvae.flows.sylvester import SylvesterFlow


class TriangularSylvesterFlow(SylvesterFlow):
    """Sylvester flow with Q = I or the reversal permutation, alternating by layer."""

    alternates = True

    def __init__(self, dim: int, context_dim: int | None = None, amortized: bool = True,
                 layer_index: int = 0, shared_triangles: bool = True):
        super().__init__(dim, context_dim, amortized, dim, {},
                         shared_triangles=shared_triangles)
        self.reverse = layer_index % 2 == 1

    def build_q(self) -> None:
        return None

    def apply_qt(self, q: None, z: Tensor) -> Tensor:
        return z.flip(-1) if self.reverse else z

    def apply_q(self, q: None, y: Tensor) -> Tensor:
        return y.flip(-1) if self.reverse else y

    def extra_repr(self) -> str:
        return f"dim={self.dim}, reverse={self.reverse}"
