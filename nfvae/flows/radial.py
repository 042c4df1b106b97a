"""Radial flow (Rezende & Mohamed 2015).

    f(z) = z + beta * h(alpha, r) * (z - z_ref),   h = 1 / (alpha + r),   r = ||z - z_ref||
    alpha = softplus(alpha_raw) > 0,   beta = -alpha + softplus(beta_raw) >= -alpha

which makes f invertible. The Jacobian is (1 + beta h) I plus a rank-one term, so

    log|det df/dz| = (D - 1) log1p(beta h) + log1p(beta h + beta h'(r) r),   h' = -h^2
                   = (D - 1) log1p(beta h) + log1p(beta alpha h^2).

Raw parameters: z_ref (D,), alpha_raw (1,), beta_raw (1,). Cost O(D) per layer;
no closed-form inverse (r would have to be solved for).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nfvae.flows.base import ParametrizedFlow


class RadialFlow(ParametrizedFlow):
    """Contracts or expands around z_ref; see the module docstring."""

    constrain_stacks = True

    @staticmethod
    def param_shapes(dim: int) -> dict[str, tuple[int, ...]]:
        return {"z_ref": (dim,), "alpha_raw": (1,), "beta_raw": (1,)}

    def constrain(self, z_ref: Tensor, alpha_raw: Tensor, beta_raw: Tensor) -> dict[str, Tensor]:
        alpha = F.softplus(alpha_raw)
        return {"z_ref": z_ref, "alpha": alpha, "beta": -alpha + F.softplus(beta_raw)}

    def bijection(self, z: Tensor, z_ref: Tensor, alpha: Tensor,
                  beta: Tensor) -> tuple[Tensor, Tensor]:
        diff = z - z_ref
        r = diff.norm(dim=-1, keepdim=True)
        h = 1.0 / (alpha + r)
        beta_h = beta * h
        z_new = z + beta_h * diff
        log_det = (self.dim - 1) * torch.log1p(beta_h) + torch.log1p(beta_h * alpha * h)
        return z_new, log_det.squeeze(-1)
