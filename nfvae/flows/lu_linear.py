"""Invertible linear map in LU form, the vector version of Glow's invertible 1x1
convolution (Kingma & Dhariwal 2018, "Glow").

    z' = W z,   W = P L (U + diag(sign * exp(log_s))),
    log|det W| = sum log_s,

with P a fixed permutation, L unit lower triangular, U strictly upper triangular
and ``sign`` fixed. W starts as a random rotation (det +1) factorised by LU, as in
Glow; since P and sign stay fixed, det W keeps its sign (+1) through training.
Inverse in closed form by two triangular solves. Cost O(D^2) per example,
O(D^3) per batch to assemble W.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nfvae.flows.base import Flow


class LULinear(Flow):
    """z' = W z with W = P L (U + diag(sign exp(log_s))); shared by all data points."""

    has_inverse = True

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        rotation, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))
        if torch.linalg.det(rotation) < 0:
            rotation[:, 0] = -rotation[:, 0]
        p, lower, upper = torch.linalg.lu(rotation)
        diag = upper.diagonal()
        self.register_buffer("permutation", p.float())
        self.register_buffer("sign", diag.sign().float())
        self.register_buffer("_lower_mask", torch.ones(dim, dim).tril(-1), persistent=False)
        self.lower = nn.Parameter(lower.tril(-1).float())
        self.upper = nn.Parameter(upper.triu(1).float())
        self.log_s = nn.Parameter(diag.abs().log().float())

    def _factors(self) -> tuple[Tensor, Tensor]:
        mask = self._lower_mask
        eye = torch.eye(self.dim, dtype=mask.dtype, device=mask.device)
        lower = self.lower * mask + eye
        upper = self.upper * mask.T + torch.diag(self.sign * self.log_s.exp())
        return lower, upper

    def weight(self) -> Tensor:
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        return z @ self.weight().T, self.log_s.sum().expand(z.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        lower, upper = self._factors()
        # W^{-1} z' = U^{-1} L^{-1} P^T z', on columns: solve for all examples at once.
        y = torch.linalg.solve_triangular(lower, (z @ self.permutation).T, upper=False,
                                          unitriangular=True)
        z0 = torch.linalg.solve_triangular(upper, y, upper=True).T
        return z0, (-self.log_s.sum()).expand(z.shape[0])
