"""The Sylvester bijection shared by the three Sylvester families (van den Berg,
Hasenclever, Tomczak & Welling 2018, "Sylvester Normalizing Flows for
Variational Inference").

    z' = z + Q R h(R~ Q^T z + b),   h = tanh,

with Q (D, M) of orthonormal columns, R and R~ (M, M) upper triangular and b (M,).
By Sylvester's determinant identity, det(I_D + Q R H' R~ Q^T) = det(I_M + H' R~ R),
and H' R~ R is upper triangular, so

    log|det dz'/dz| = sum_i log|1 + h'(R~ Q^T z + b)_i r_ii r~_ii|.

Constraint: r_ii = tanh(.), r~_ii = tanh(.), so |r_ii r~_ii| < 1; with
0 < h' <= 1 every factor is positive and the map is invertible (the paper's
condition r_ii r~_ii > -1 / ||h'||_inf). The factor is evaluated as
h^2 + h' (1 + r_ii r~_ii), with 1 + r r~ = (1 - |r|) + |r| (1 - |r~|) when the
product is negative, so it does not round to 0 when both tanh saturate.

Parameter sharing as in the reference implementation: one (M, M) matrix gives
the strictly upper part of R and, transposed, the strictly upper part of R~;
the two diagonals come separately. This halves the largest part of an amortized
head (M^2 instead of 2 M^2 outputs); ``shared_triangles=False`` gives R~ its own
matrix, for comparison (benchmarks/bench_flows.py measures both).
Raw parameters: r (M, M), r_diag (2, M), b (M,), [r_tilde (M, M)], plus what the
subclass needs for Q. Subclasses supply Q^T z and Q y. No closed-form inverse.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nfvae.flows.base import ParametrizedFlow


def one_plus_diagonal_product(r_diag: Tensor) -> Tensor:
    """1 + r_ii r~_ii, (B, M), from the raw (pre-tanh) diagonals ``r_diag`` (B, 2, M),
    written so that it does not round to 0 when both tanh saturate."""
    raw_r, raw_rt = r_diag[:, 0], r_diag[:, 1]
    prod = torch.tanh(raw_r) * torch.tanh(raw_rt)
    # 1 - |tanh x| = 2 sigmoid(-2|x|): exact where tanh has rounded to +-1.
    gap_r = 2.0 * torch.sigmoid(-2.0 * raw_r.abs())
    gap_rt = 2.0 * torch.sigmoid(-2.0 * raw_rt.abs())
    return torch.where(prod >= 0, 1.0 + prod, gap_r + (1.0 - gap_r) * gap_rt)


def log_det_factors(pre: Tensor, one_plus_prod: Tensor) -> Tensor:
    """log(1 + h'(pre) r_ii r~_ii) per unit, (B, M), as h^2 + h' (1 + r_ii r~_ii)."""
    h = torch.tanh(pre)
    dh = 4.0 * torch.sigmoid(2.0 * pre) * torch.sigmoid(-2.0 * pre)  # 1 - tanh^2
    return torch.log(h * h + dh * one_plus_prod)


class SylvesterFlow(ParametrizedFlow):
    """z + Q R tanh(R~ Q^T z + b); subclasses choose how Q is built."""

    samples_broadcast = True

    def __init__(self, dim: int, context_dim: int | None, amortized: bool, num_vecs: int,
                 q_shapes: dict[str, tuple[int, ...]], shared_triangles: bool = True):
        if not 1 <= num_vecs <= dim:
            raise ValueError(
                f"{type(self).__name__}: the number of orthonormal vectors M must be in "
                f"[1, D] = [1, {dim}], got {num_vecs}"
            )
        shapes = {"r": (num_vecs, num_vecs), "r_diag": (2, num_vecs), "b": (num_vecs,)}
        if not shared_triangles:
            shapes["r_tilde"] = (num_vecs, num_vecs)
        shapes.update(q_shapes)
        super().__init__(dim, context_dim, amortized, shapes=shapes)
        self.num_vecs = num_vecs
        self.shared_triangles = shared_triangles
        self.register_buffer("_strict_upper", torch.ones(num_vecs, num_vecs).triu(1),
                             persistent=False)

    def build_q(self, **q_raw: Tensor):
        """Whatever representation of Q the subclass applies (matrix, vectors, nothing)."""
        raise NotImplementedError

    def apply_qt(self, q, z: Tensor) -> Tensor:
        """Q^T z for S samples of each of B data points: (B, S, D) -> (B, S, M)."""
        raise NotImplementedError

    def apply_q(self, q, y: Tensor) -> Tensor:
        """Q y: (B, S, M) -> (B, S, D)."""
        raise NotImplementedError

    def constrain(self, r: Tensor, r_diag: Tensor, b: Tensor, r_tilde: Tensor | None = None,
                  **q_raw: Tensor) -> dict[str, Tensor | None]:
        mask = self._strict_upper.to(r.dtype)
        diag = torch.tanh(r_diag)
        return {
            "q": self.build_q(**q_raw),
            "r_upper": r * mask,  # strict upper part of R
            # strict upper part of R~: the lower part of the shared matrix, transposed
            "rt_upper": (r.transpose(1, 2) if r_tilde is None else r_tilde) * mask,
            "r_diag": diag[:, 0],
            "rt_diag": diag[:, 1],
            "b": b,
            "one_plus_prod": one_plus_diagonal_product(r_diag),
        }

    def bijection(self, z: Tensor, q, r_upper: Tensor, rt_upper: Tensor, r_diag: Tensor,
                  rt_diag: Tensor, b: Tensor, one_plus_prod: Tensor) -> tuple[Tensor, Tensor]:
        # Parameters of B rows serve z of S*B rows (row s*B + b uses row b): each data
        # point's S samples go through its matrices as one (S, M) x (M, M) product,
        # not S copies of the matrices and S matrix-vector products.
        rows, dim = b.shape[0], z.shape[-1]
        samples = z.shape[0] // rows
        zs = z.reshape(samples, rows, dim).transpose(0, 1)  # (B, S, D)
        qz = self.apply_qt(q, zs)
        pre = qz @ rt_upper.transpose(1, 2) + rt_diag.unsqueeze(1) * qz + b.unsqueeze(1)
        h = torch.tanh(pre)
        rh = h @ r_upper.transpose(1, 2) + r_diag.unsqueeze(1) * h
        z_new = zs + self.apply_q(q, rh)
        log_det = log_det_factors(pre, one_plus_prod.unsqueeze(1)).sum(-1)
        return z_new.transpose(0, 1).reshape(z.shape), log_det.t().reshape(-1)
