"""A flow as a distribution: a base density pushed through a stack of flows.

    x = f(z),  z ~ base,   log q(x) = log base(z) - log|det df/dz|,   z = f^{-1}(x).

Sampling and ``rsample_and_log_prob`` run the flow forwards (every family);
``log_prob`` of a given x runs it backwards and needs an inverse (coupling,
Glow, spline, IAF's sequential inverse, Householder); the others raise
``InverseNotAvailable``. The 2-D density experiments (``nfvae.toy``) and the
VAE's flow prior (``nfvae.priors``) hold one; the flows are the same modules the
VAE's posterior uses (nothing here re-implements a flow).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from nfvae.flows.base import Flow

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * z.pow(2).sum(-1) - z.shape[-1] * _HALF_LOG_2PI


class StandardNormal(nn.Module):
    """N(0, I_D), event shape (D,), as a module rather than a torch ``Distribution``.

    Its draws take the device and dtype of a non-persistent buffer, which
    ``.to()`` / ``.double()`` move with the model it belongs to, while its
    state_dict stays empty (a model that holds one saves the same keys as before).
    It offers the part of the ``Distribution`` interface ``FlowDistribution`` uses,
    and ``push``/``sample`` as a prior with no flow.
    """

    def __init__(self, dim: int, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None):
        super().__init__()
        if dim < 1:
            raise ValueError(f"the standard normal needs dimension >= 1, got {dim}")
        self.dim = dim
        self.register_buffer("_anchor", torch.zeros((), dtype=dtype, device=device),
                             persistent=False)

    @property
    def event_shape(self) -> torch.Size:
        return torch.Size((self.dim,))

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size()

    def log_prob(self, z: Tensor) -> Tensor:
        """(..., D) -> (...)."""
        return standard_normal_log_prob(z)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        anchor = self._anchor
        return torch.randn(*sample_shape, self.dim, dtype=anchor.dtype, device=anchor.device)

    def push(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The prior's draw for base noise u (N, D): u itself, and its log-density."""
        return u, standard_normal_log_prob(u)

    @torch.no_grad()
    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        return self.rsample((n,))


def standard_normal(dim: int, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> StandardNormal:
    """N(0, I_dim) with event shape (dim,)."""
    return StandardNormal(dim, dtype, device)


class FlowDistribution(nn.Module):
    """``base`` (event shape (D,)) pushed through ``flow``; an nn.Module for the flow's parameters.

    ``context`` (for amortized flows) is (N, H), or (H,) / (1, H) to share one
    context over all N points.
    """

    def __init__(self, base: Distribution | StandardNormal, flow: Flow):
        super().__init__()
        if not isinstance(base, (Distribution, StandardNormal)):
            raise TypeError("base must be a torch.distributions.Distribution or "
                            f"nfvae.distributions.StandardNormal, got {type(base)}")
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
        return self.push(self.base.rsample((n,)), context)

    def push(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x = f(u) for given base draws u (N, D) (fixed noise, e.g. for figures that
        compare epochs), and log q(x) = log base(u) - log|det df/du|, shape (N,)."""
        x, sum_log_det = self.flow(u, self._context(context, u.shape[0]))
        return x, self.base.log_prob(u) - sum_log_det

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
