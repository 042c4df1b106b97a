"""The split of a coupling layer: which half conditions, which half is transformed."""

from __future__ import annotations

import torch
from torch import Tensor


def soft_clamp(x: Tensor, bound: float | None) -> Tensor:
    """bound * tanh(x / bound): |result| < bound, ~x where |x| << bound; None: x. The
    couplings' log-scales (``max_log_scale``) and Glow's priors' use it."""
    return x if bound is None else bound * torch.tanh(x / bound)


class CouplingSplit:
    """First/second half of z; on odd layers the halves swap roles, so a stack of
    couplings alternates its masks and every coordinate gets transformed."""

    def __init__(self, dim: int, layer_index: int, owner: str):
        if dim < 2:
            raise ValueError(f"{owner}: a coupling layer needs dim >= 2, got {dim}")
        self.at = dim // 2
        self.swap = layer_index % 2 == 1
        self.num_kept = dim - self.at if self.swap else self.at
        self.num_changed = dim - self.num_kept

    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z (B, D) -> (z_a kept (B, d_a), z_b transformed (B, d_b)); an image
        (B, C, H, W) splits its channels the same way."""
        first, second = z[:, :self.at], z[:, self.at:]
        return (second, first) if self.swap else (first, second)

    def join(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        # dim 1: the coordinates of a vector (B, D), the channels of an image (B, C, H, W).
        return torch.cat([z_b, z_a] if self.swap else [z_a, z_b], dim=1)

    def __repr__(self) -> str:
        kept = "second" if self.swap else "first"
        return f"CouplingSplit(at={self.at}, kept={kept} half)"
