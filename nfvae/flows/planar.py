"""Planar flow (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows").

    f(z) = z + u_hat * tanh(w.z + b)
    u_hat = u + (m(w.u) - w.u) * w / ||w||^2,   m(a) = -1 + softplus(a)

so w.u_hat = m(w.u) > -1 and f is invertible. With psi(z) = (1 - tanh^2(w.z + b)) w,

    log|det df/dz| = log|1 + u_hat.psi(z)| = log1p(u_hat.psi(z)).

Raw parameters: u (D,), w (D,), b (1,). Cost O(D) per layer; no closed-form inverse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nfvae.flows.base import ParametrizedFlow

# ||w||^2 is clamped here: a zero-initialised amortized head gives w = 0, and the
# correction term of u_hat would divide by zero.
_MIN_SQUARED_NORM = 1e-12


def constrain_u(u: Tensor, w: Tensor) -> Tensor:
    """u_hat such that w.u_hat = -1 + softplus(w.u) > -1 (for ||w||^2 above the clamp)."""
    wu = (w * u).sum(-1, keepdim=True)
    m = -1.0 + F.softplus(wu)
    w_norm_sq = (w * w).sum(-1, keepdim=True).clamp_min(_MIN_SQUARED_NORM)
    return u + (m - wu) * w / w_norm_sq


class PlanarFlow(ParametrizedFlow):
    """z + u_hat tanh(w.z + b); see the module docstring for the constraint."""

    @staticmethod
    def param_shapes(dim: int) -> dict[str, tuple[int, ...]]:
        return {"u": (dim,), "w": (dim,), "b": (1,)}

    def transform(self, z: Tensor, u: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        u_hat = constrain_u(u, w)
        h = torch.tanh((w * z).sum(-1, keepdim=True) + b)
        z_new = z + u_hat * h
        # u_hat.psi = (1 - h^2) (w.u_hat); the constraint keeps it above -1.
        u_hat_psi = (1.0 - h.pow(2)).squeeze(-1) * (w * u_hat).sum(-1)
        return z_new, torch.log1p(u_hat_psi)
