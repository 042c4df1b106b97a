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


def unit_vectors(v: Tensor) -> Tensor:
    """v / ||v|| along the last axis, with ||v||^2 clamped so that v = 0 stays 0."""
    return v / (v * v).sum(-1, keepdim=True).clamp_min(_MIN_SQUARED_NORM).sqrt()


def reflect_all(z: Tensor, unit_v: Tensor, reverse: bool = False) -> Tensor:
    """H(v_R) ... H(v_1) z for z (B, D) and unit vectors (B, R, D); ``reverse``: the
    inverse, H(v_1) ... H(v_R) z. Each H(v) z = z - 2 (v.z) v for unit v."""
    order = range(unit_v.shape[1])
    for r in reversed(order) if reverse else order:
        v = unit_v[:, r]
        z = z - 2.0 * (v * z).sum(-1, keepdim=True) * v
    return z


class HouseholderFlow(ParametrizedFlow):
    """z' = H(v_R) ... H(v_1) z, volume preserving; see the module docstring."""

    has_inverse = True

    def __init__(self, dim: int, context_dim: int | None = None, amortized: bool = True,
                 num_reflections: int = 2):
        if num_reflections < 1:
            raise ValueError(f"householder: num_reflections must be >= 1, got {num_reflections}")
        super().__init__(dim, context_dim, amortized, shapes={"v": (num_reflections, dim)})
        self.num_reflections = num_reflections

    def constrain(self, v: Tensor) -> dict[str, Tensor]:
        return {"unit_v": unit_vectors(v)}

    def bijection(self, z: Tensor, unit_v: Tensor) -> tuple[Tensor, Tensor]:
        return reflect_all(z, unit_v), z.new_zeros(z.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        unit_v = self.constrained_parameters(context, z.shape[0])["unit_v"]
        return reflect_all(z, unit_v, reverse=True), z.new_zeros(z.shape[0])
