"""Conditioner networks of coupling flows: x_a (and the context) -> transform parameters."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def check_hidden_dims(hidden_dims: Sequence[int], owner: str) -> list[int]:
    hidden = [int(h) for h in hidden_dims]
    if not hidden or min(hidden) < 1:
        raise ValueError(f"{owner}: hidden_dims must be a non-empty list of sizes >= 1, "
                         f"got {list(hidden_dims)}")
    return hidden


class ConditionerMLP(nn.Module):
    """cat(x (B, n_in), context (B, H)) -> (B, n_out), ELU hidden layers.

    The output layer starts at zero, so a coupling starts at the map its zero
    parameters give (the identity for affine and spline couplings).
    """

    def __init__(self, in_dim: int, context_dim: int | None, hidden_dims: Sequence[int],
                 out_dim: int, owner: str = "conditioner"):
        super().__init__()
        hidden = check_hidden_dims(hidden_dims, owner)
        sizes = [in_dim + (context_dim or 0), *hidden]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(n_in, n_out), nn.ELU()]
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(hidden[-1], out_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, context: Tensor | None, repeats: int = 1) -> Tensor:
        """x (S*B, n_in) with row s*B + b belonging to context row b (B, H); S = ``repeats``."""
        if context is None or repeats == 1:
            inputs = x if context is None else torch.cat([x, context], dim=-1)
            return self.out(self.hidden(inputs))
        # The first layer's context term and bias once per data point, broadcast over
        # its S samples: importance sampling would otherwise copy the context S times
        # and multiply every copy.
        first = self.hidden[0]
        n_in = x.shape[-1]
        shared = F.linear(context, first.weight[:, n_in:], first.bias)
        h = F.linear(x, first.weight[:, :n_in]).view(repeats, *shared.shape) + shared
        return self.out(self.hidden[1:](h.view(x.shape[0], -1)))
