"""Tensors about a FlowVAE's latent space, for the figures of ``nfvae.viz.latent_figures``.

Everything is computed under no_grad from the model's parts (``encode``, ``flow``,
``decoder``, ``likelihood``) and returned on the CPU; no Trainer, no plotting.
Random draws use a caller's ``torch.Generator`` so that figures of different
epochs are made from the same noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from nfvae.model import FlowVAE
from nfvae.viz.probes import DensityMap, Window, layer_densities, push_through_layers

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class LatentSnapshot:
    """S posterior draws of N points, followed through the flow's K layers.

    mu, log_sigma: (N, D) of q0(z0|x); zs: (K + 1, S, N, D), zs[k] = z_k;
    log_dets: (K, S, N) per-layer log|det J_k|; labels: (N,).
    """

    mu: Tensor
    log_sigma: Tensor
    zs: Tensor
    log_dets: Tensor
    labels: Tensor

    @property
    def num_layers(self) -> int:
        return self.zs.shape[0] - 1

    @property
    def latent_dim(self) -> int:
        return self.mu.shape[1]

    @property
    def mean_zK(self) -> Tensor:
        """Monte-Carlo E_q[zK | x], (N, D)."""
        return self.zs[-1].mean(0)


def _device(model: FlowVAE) -> torch.device:
    return model.to_mu.weight.device


@torch.no_grad()
def latent_snapshot(model: FlowVAE, x: Tensor, labels: Tensor, num_samples: int,
                    generator: torch.Generator) -> LatentSnapshot:
    """Encode x, draw ``num_samples`` z0 ~ q0(.|x) each, and push them through every layer."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    mu, log_sigma, context = model.encode(x.to(_device(model)))
    n, d = mu.shape
    eps = torch.randn(num_samples, n, d, generator=generator).to(mu)
    z0 = (mu + log_sigma.exp() * eps).reshape(-1, d)
    flat_context = context.expand(num_samples, n, context.shape[-1]).reshape(-1, context.shape[-1])
    zs, log_dets = push_through_layers(model.flow, z0, flat_context)
    zs = torch.stack(zs).view(len(zs), num_samples, n, d).float().cpu()
    log_dets = (torch.stack(log_dets).view(len(log_dets), num_samples, n).float().cpu()
                if log_dets else torch.zeros(0, num_samples, n))
    return LatentSnapshot(mu.float().cpu(), log_sigma.float().cpu(), zs, log_dets, labels.cpu())


def activity(posterior_means: Tensor) -> Tensor:
    """A_u = Cov_x(E_q[u | x]) per dimension, (N, D) -> (D,) (Burda et al. 2016, Sec. 5.2)."""
    return posterior_means.double().var(0, unbiased=True)


def activity_from_draws(draws: Tensor) -> Tensor:
    """A_u = Cov_x(E_q[u | x]) from S posterior draws per point, (S, N, D) -> (D,).

    The variance over x of the S-draw means is inflated by their Monte-Carlo
    noise, E_x[Var_q(u | x)] / S; subtracting its unbiased estimate (the mean
    within-point sample variance over S) leaves an unbiased estimate of A_u,
    so a collapsed unit is not counted active because of sampling noise.
    """
    draws = draws.double()
    num_samples = draws.shape[0]
    if num_samples < 2:
        raise ValueError("activity from draws needs at least 2 draws per point")
    between = draws.mean(0).var(0, unbiased=True)
    within = draws.var(0, unbiased=True).mean(0)
    return between - within / num_samples


def kl_q0_per_dimension(mu: Tensor, log_sigma: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per latent dimension, averaged over the points: (D,)."""
    mu, log_sigma = mu.double(), log_sigma.double()
    return (0.5 * (mu.pow(2) + (2 * log_sigma).exp() - 1) - log_sigma).mean(0)


def pick_examples(labels: Tensor, count: int) -> Tensor:
    """Indices of ``count`` points, one per distinct label first (lowest label first),
    then the earliest remaining ones: a fixed, varied selection."""
    labels = labels.cpu()
    firsts = [int((labels == value).nonzero()[0]) for value in labels.unique()]
    taken = set(firsts)
    rest = [i for i in range(len(labels)) if i not in taken]
    return torch.tensor((firsts + rest)[:count], dtype=torch.long)


@torch.no_grad()
def decode_mean(model: FlowVAE, z: Tensor) -> Tensor:
    """Mean of p(x|z) for z (..., D) -> (..., *data_shape), on the CPU."""
    flat = z.reshape(-1, z.shape[-1]).to(_device(model))
    images = model.likelihood.mean(model.decoder(flat)).float().cpu()
    return images.view(*z.shape[:-1], *images.shape[1:])


@torch.no_grad()
def posterior_mean_zK(model: FlowVAE, x: Tensor) -> Tensor:
    """zK of z0 = mu (the flow applied to q0's mean, with x's own context): (N, D)."""
    mu, _, context = model.encode(x.to(_device(model)))
    return model.flow(mu, context)[0].float().cpu()


def interpolation_latents(za: Tensor, zb: Tensor, num_steps: int) -> Tensor:
    """(P, D), (P, D) -> (P, T, D): z = (1 - t) za + t zb at T evenly spaced t in [0, 1]."""
    t = torch.linspace(0, 1, num_steps).view(1, -1, 1)
    return (1 - t) * za.unsqueeze(1) + t * zb.unsqueeze(1)


@dataclass
class Traversal:
    """Latents along the top principal directions of a point cloud.

    latents: (R, T, D), centre + c * std_r * direction_r for the T offsets c;
    explained: (R,) fraction of variance of each direction.
    """

    latents: Tensor
    offsets: Tensor
    explained: Tensor


def traversal_latents(points: Tensor, num_directions: int, num_steps: int, span: float
                      ) -> Traversal:
    """Walk from the mean of ``points`` (N, D) along its top principal directions, from
    -span to +span standard deviations of the cloud along each."""
    points = points.double()
    centre = points.mean(0)
    _, singular, v = torch.linalg.svd(points - centre, full_matrices=False)
    variance = singular.pow(2) / max(1, len(points) - 1)
    r = min(num_directions, points.shape[1])
    offsets = torch.linspace(-span, span, num_steps, dtype=torch.float64)
    steps = offsets.view(1, -1, 1) * variance[:r].sqrt().view(-1, 1, 1) * v[:r].unsqueeze(1)
    return Traversal((centre + steps).float(), offsets.float(),
                     (variance[:r] / variance.sum()).float())


@dataclass
class PosteriorView:
    """One data point's posterior in a 2-D latent space, before and after the flow."""

    image: Tensor            # (C, H, W)
    label: int
    q0: DensityMap
    qK: DensityMap
    window: Window           # the zoom both maps are drawn in
    z0: Tensor               # (M, 2) draws of q0
    zK: Tensor               # (M, 2) the same draws after the flow


def diagonal_normal_log_prob(mu: Tensor, log_sigma: Tensor):
    """z (B, D) -> log N(z; mu, diag(sigma^2)) for one point's mu, log_sigma (D,)."""
    def log_prob(z: Tensor) -> Tensor:
        std = (z - mu.to(z)) * torch.exp(-log_sigma.to(z))
        return -0.5 * std.pow(2).sum(-1) - log_sigma.to(z).sum() - z.shape[-1] * _HALF_LOG_2PI
    return log_prob


@torch.no_grad()
def posterior_views(model: FlowVAE, x: Tensor, labels: Tensor, grid_size: int,
                    num_draws: int, generator: torch.Generator) -> list[PosteriorView]:
    """q0(z0|x) and qK(zK|x) of each point of x (latent size 2) as densities.

    qK comes through the flow's inverse on a regular grid where it has one, else
    from q0's grid (mu +- 4.5 sigma) pushed through the flow with the change of
    variables. Both are drawn in a zoom holding q0's and qK's draws.
    """
    if model.latent_dim != 2:
        raise ValueError(f"posterior densities are drawn for latent size 2, got {model.latent_dim}")
    device = _device(model)
    mu, log_sigma, context = model.encode(x.to(device))
    views = []
    for i in range(len(x)):
        ctx = context[i:i + 1]
        eps = torch.randn(num_draws, 2, generator=generator).to(mu)
        z0 = mu[i] + log_sigma[i].exp() * eps
        zK = model.flow(z0, ctx.expand(num_draws, -1))[0]
        window = Window.around(torch.cat([z0, zK]))
        sigma = log_sigma[i].exp().double().cpu()
        base_window = Window(tuple(mu[i].double().cpu().tolist()),
                             tuple((4.5 * sigma).tolist()))
        log_q0 = diagonal_normal_log_prob(mu[i], log_sigma[i])
        maps = layer_densities(model.flow, log_q0, window, base_window, grid_size,
                               [0, len(model.flow)], context=ctx)
        views.append(PosteriorView(x[i].float().cpu(), int(labels[i]), maps[0], maps[1], window,
                                   z0.float().cpu(), zK.float().cpu()))
    return views


def histogram_density(points: Tensor, window: Window, bins: int) -> DensityMap:
    """A normalised 2-D histogram of points (N, 2) as a density on the bin centres."""
    points = points.double().cpu()
    edges_x = torch.linspace(*window.xlim, bins + 1, dtype=torch.float64)
    edges_y = torch.linspace(*window.ylim, bins + 1, dtype=torch.float64)
    counts, _ = torch.histogramdd(points, bins=[edges_x, edges_y])
    cell = (edges_x[1] - edges_x[0]) * (edges_y[1] - edges_y[0])
    density = counts.T / (len(points) * cell)  # histogramdd is (x, y); maps are (y, x)
    cx, cy = 0.5 * (edges_x[1:] + edges_x[:-1]), 0.5 * (edges_y[1:] + edges_y[:-1])
    y, x = torch.meshgrid(cy, cx, indexing="ij")
    return DensityMap(x, y, density, regular=True)
