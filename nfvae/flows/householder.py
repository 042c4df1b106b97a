"""Householder flow (Tomczak & Welling 2016, "Improving Variational Auto-Encoders using
Householder Flow").

Each reflection is

    H(v) z = (I - 2 v v^T / ||v||^2) z,

orthogonal, so log|det| = 0: the flow rotates a diagonal-Gaussian posterior into
a full-covariance one without changing its volume. One layer applies
``num_reflections`` reflections, z' = H(v_R) ... H(v_1) z. A single reflection
has det = -1 (it reverses orientation); the default of two per layer makes each
layer a rotation (det = +1), so ``flow.num_layers = K`` is the paper's T = 2K.

Raw parameters: v (R, D), from the encoder's context (amortized; the paper
computes v_t from v_{t-1} with a linear map, here each layer has its own linear
head on the context) or learned. No constraint is needed: any v != 0 gives an
orthogonal map; ||v||^2 is clamped so that v = 0 gives the identity instead of a
division by zero. Cost O(R D) per layer; the inverse applies the reflections in
reverse order (each is its own inverse).
"""

from __future__ import annotations

from torch import Tensor

from nfvae.flows.base import ParametrizedFlow

_MIN_SQUARED_NORM = 1e-12


def reflect(z: Tensor, v: Tensor) -> Tensor:
    """(I - 2 v v^T / ||v||^2) z for z (B, D) and v (B, D)."""
    v_norm_sq = (v * v).sum(-1, keepdim=True).clamp_min(_MIN_SQUARED_NORM)
    return z - 2.0 * (v * z).sum(-1, keepdim=True) / v_norm_sq * v


class HouseholderFlow(ParametrizedFlow):
    """z' = H(v_R) ... H(v_1) z, volume preserving; see the module docstring."""

    def __init__(self, dim: int, context_dim: int | None = None, amortized: bool = True,
                 num_reflections: int = 2):
        if num_reflections < 1:
            raise ValueError(f"householder: num_reflections must be >= 1, got {num_reflections}")
        super().__init__(dim, context_dim, amortized, shapes={"v": (num_reflections, dim)})
        self.num_reflections = num_reflections

    def transform(self, z: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        for r in range(v.shape[1]):
            z = reflect(z, v[:, r])
        return z, z.new_zeros(z.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        v = self.raw_parameters(z, context)["v"]
        for r in reversed(range(v.shape[1])):
            z = reflect(z, v[:, r])
        return z, z.new_zeros(z.shape[0])
