"""A flow as a distribution: a base density pushed through a stack of flows.

    x = f(z),  z ~ base,   log q(x) = log base(z) - log|det df/dz|,   z = f^{-1}(x).

Sampling and ``rsample_and_log_prob`` run the flow forwards (every family);
``log_prob`` of a given x runs it backwards and needs an inverse (coupling,
Glow, spline, IAF's sequential inverse, Householder); the others raise
``InverseNotAvailable``. This is what 2-D density experiments and flow priors
use; the flows are the same modules the VAE's posterior uses (nothing here
re-implements a flow).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from nfvae.flows.base import Flow


def standard_normal(dim: int, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Distribution:
    """N(0, I_dim) with event shape (dim,)."""
    zeros = torch.zeros(dim, dtype=dtype, device=device)
    return Independent(Normal(zeros, torch.ones_like(zeros)), 1)


class FlowDistribution(nn.Module):
    """``base`` (event shape (D,)) pushed through ``flow``; an nn.Module for the flow's parameters.

    ``context`` (for amortized flows) is (N, H), or (H,) / (1, H) to share one
    context over all N points.
    """

    def __init__(self, base: Distribution, flow: Flow):
        super().__init__()
        if not isinstance(base, Distribution):
            raise TypeError(f"base must be a torch.distributions.Distribution, got {type(base)}")
        if len(base.event_shape) != 1 or len(base.batch_shape) != 0:
            raise ValueError(
                "base must have one event dimension and no batch shape, e.g. "
                f"Independent(Normal(zeros(D), ones(D)), 1); got event_shape "
                f"{tuple(base.event_shape)}, batch_shape {tuple(base.batch_shape)}"
            )
        flow_dim = getattr(flow, "dim", None)
        if flow_dim is not None and flow_dim != base.event_shape[0]:
            raise ValueError(f"base has dimension {base.event_shape[0]} but the flow {flow_dim}")
        self.base = base
        self.flow = flow
        self.dim = base.event_shape[0]

    def _context(self, context: Tensor | None, n: int) -> Tensor | None:
        if context is None:
            return None
        if context.dim() == 1:
            context = context.unsqueeze(0)
        if context.shape[0] == 1 and n != 1:
            context = context.expand(n, -1)
        if context.dim() != 2 or context.shape[0] != n:
            raise ValueError(f"context must be (H,), (1, H) or ({n}, H), "
                             f"got {tuple(context.shape)}")
        return context

    def rsample_and_log_prob(self, n: int, context: Tensor | None = None
                             ) -> tuple[Tensor, Tensor]:
        """n reparameterised samples x (n, D) and log q(x) (n,), through the forward flow."""
        z = self.base.rsample((n,))
        x, sum_log_det = self.flow(z, self._context(context, n))
        return x, self.base.log_prob(z) - sum_log_det

    @torch.no_grad()
    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """n samples x (n, D), without gradients."""
        return self.rsample_and_log_prob(n, context)[0]

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """log q(x) for x (B, D): base log-density of f^{-1}(x) plus log|det df^{-1}/dx|."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        z, inverse_log_det = self.flow.inverse(x, self._context(context, x.shape[0]))
        return self.base.log_prob(z) + inverse_log_det
