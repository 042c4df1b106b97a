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


class PlanarFlow(ParametrizedFlow):
    """z + u_hat tanh(w.z + b); see the module docstring for the constraint."""

    constrain_stacks = True

    @staticmethod
    def param_shapes(dim: int) -> dict[str, tuple[int, ...]]:
        return {"u": (dim,), "w": (dim,), "b": (1,)}

    def constrain(self, u: Tensor, w: Tensor, b: Tensor) -> dict[str, Tensor]:
        """u_hat with w.u_hat = -1 + softplus(w.u) > -1 (for ||w||^2 above the clamp)."""
        wu = (w * u).sum(-1, keepdim=True)
        softplus_wu = F.softplus(wu)
        w_norm_sq = (w * w).sum(-1, keepdim=True)
        w_norm_sq_clamped = w_norm_sq.clamp_min(_MIN_SQUARED_NORM)
        # 1 + u_hat.psi = 1 + (1 - h^2) w.u_hat = h^2 + (1 - h^2)(1 + w.u_hat), and
        # 1 + w.u_hat = scale * softplus(w.u) + (1 - scale)(1 + w.u), with
        # scale = ||w||^2 / max(||w||^2, clamp) (1 unless w is ~0). Written this
        # way no term cancels: for w.u << 0, -1 + softplus(w.u) rounds to -1 and
        # log1p(u_hat.psi) would return -inf where the true log-det is finite.
        scale = w_norm_sq / w_norm_sq_clamped
        return {
            "u_hat": u + (-1.0 + softplus_wu - wu) * w / w_norm_sq_clamped,
            "w": w,
            "b": b,
            "one_plus_w_u_hat": scale * softplus_wu + (1.0 - scale) * (1.0 + wu),
        }

    def bijection(self, z: Tensor, u_hat: Tensor, w: Tensor, b: Tensor,
                  one_plus_w_u_hat: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh((w * z).sum(-1, keepdim=True) + b)
        z_new = z + u_hat * h
        h_sq = h.pow(2)
        log_det = torch.log(h_sq + (1.0 - h_sq) * one_plus_w_u_hat)
        return z_new, log_det.squeeze(-1)
