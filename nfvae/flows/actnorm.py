"""Activation normalisation, ActNorm (Kingma & Dhariwal 2018, "Glow").

    z' = exp(log_scale) * z + shift,   log|det dz'/dz| = sum log_scale,

per coordinate, shared by all data points. Data-dependent initialisation: on the
first forward call, log_scale and shift are set so that the output of that batch
has zero mean and unit variance per coordinate; coordinates with no spread keep
scale 1. ``inverse`` has no side effects: a density model trained through the
inverse (data -> noise) initialises explicitly, by running its first inverse pass
inside ``initialize_by_inverse(flow)``, which standardises the inverse's output. The
``initialized`` flag is a buffer, saved in checkpoints, so a loaded model does
not re-initialise. Under DDP the statistics are those of all ranks' first batches
together (an all-reduce of count, sum and sum of squares): DDP broadcasts
parameters only when it wraps the model, so ranks initialising from their own
batches would train different models from then on. Inverse in closed form. Cost O(D).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor, nn

from nfvae.distributed import rank_and_world
from nfvae.flows.base import Flow


def batch_moments(z: Tensor) -> tuple[Tensor, Tensor]:
    """Per-coordinate mean and (biased) standard deviation of z (B, D), over every
    rank's batch when a process group is running (all ranks must call it together);
    a single example gives standard deviation 1."""
    if rank_and_world()[1] == 1:
        mean = z.mean(0)
        return mean, z.std(0, unbiased=False) if z.shape[0] > 1 else torch.ones_like(mean)
    # float64 sums, so that E[z^2] - E[z]^2 keeps float32 precision after the reduction.
    zd = z.double()
    stats = torch.cat([zd.new_tensor([z.shape[0]]), zd.sum(0), zd.pow(2).sum(0)])
    dist.all_reduce(stats)
    count, total, total_sq = stats[0], stats[1:1 + z.shape[1]], stats[1 + z.shape[1]:]
    mean = total / count
    std = (total_sq / count - mean.pow(2)).clamp_min(0.0).sqrt()
    if count < 2:
        std = torch.ones_like(std)
    return mean.to(z.dtype), std.to(z.dtype)


class ActNorm(Flow):
    """Per-coordinate affine map with data-dependent initialisation."""

    has_inverse = True

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.shift = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))
        self._initialize_on_inverse = False

    @torch.no_grad()
    def _initialize(self, z: Tensor, inverse: bool) -> None:
        mean, std = batch_moments(z)
        # A coordinate without spread (or a batch of one) keeps scale 1.
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        if inverse:  # z = (z' - shift) e^{-log_scale} should come out standardised
            self.log_scale.copy_(std.log())
            self.shift.copy_(mean)
        else:        # z' = e^{log_scale} z + shift should come out standardised
            self.log_scale.copy_(-std.log())
            self.shift.copy_(-mean / std)
        self.initialized.fill_(True)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        if not self.initialized:
            self._initialize(z, inverse=False)
        z_new = z * self.log_scale.exp() + self.shift
        return z_new, self.log_scale.sum().expand(z.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        if self._initialize_on_inverse and not self.initialized:
            self._initialize(z, inverse=True)
        z0 = (z - self.shift) * (-self.log_scale).exp()
        return z0, (-self.log_scale.sum()).expand(z.shape[0])


def uninitialized_actnorms(flow: nn.Module) -> list[ActNorm]:
    return [m for m in flow.modules() if isinstance(m, ActNorm) and not m.initialized]


@contextmanager
def initialize_by_inverse(flow: nn.Module) -> Iterator[None]:
    """Within the block, every uninitialised ActNorm of ``flow`` that an inverse call
    reaches initialises from that call's batch, so that its output (towards the base)
    is standardised; outside it, ``inverse`` never changes the flow."""
    norms = uninitialized_actnorms(flow)
    for norm in norms:
        norm._initialize_on_inverse = True
    try:
        yield
    finally:
        for norm in norms:
            norm._initialize_on_inverse = False
