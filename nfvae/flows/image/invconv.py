"""Invertible 1x1 convolution in LU form (Kingma & Dhariwal 2018, "Glow", Sec. 3.2):

    x'[:, i, j] = W x[:, i, j],   W = P L (U + diag(sign exp(log_s))),
    log|det| = H W sum log_s,

the C x C matrix of ``LULinear`` (its factorisation, random-rotation start and
parameters) applied at every pixel as a convolution. Inverse: the same convolution
with W^{-1} = U^{-1} L^{-1} P^T, two triangular solves of a C x C matrix.
Cost O(B C^2 H W + C^3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nfvae.flows.image.base import check_image
from nfvae.flows.lu_linear import LULinear


class InvConv1x1(LULinear):
    """LU-factorised 1x1 convolution over C = ``dim`` channels; see the module docstring."""

    def check_z(self, z: Tensor) -> None:
        check_image(z, self.dim, "InvConv1x1")

    def inverse_weight(self) -> Tensor:
        lower, upper = self._factors()
        l_inv_pt = torch.linalg.solve_triangular(lower, self.permutation.T, upper=False,
                                                 unitriangular=True)
        return torch.linalg.solve_triangular(upper, l_inv_pt, upper=True)

    def _log_det(self, x: Tensor) -> Tensor:
        return (x.shape[2] * x.shape[3] * self.log_s.sum()).expand(x.shape[0])

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        return F.conv2d(z, self.weight()[:, :, None, None]), self._log_det(z)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        return F.conv2d(z, self.inverse_weight()[:, :, None, None]), -self._log_det(z)
