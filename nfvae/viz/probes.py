"""Tensors the figures need, computed from a flow: densities on grids, pushed lines.

No plotting and no Trainer here; every function takes modules and tensors and
returns tensors (on the CPU, float64 where they feed a picture), under no_grad.

A density after k layers, q_k, is drawn in one of two exact ways:

* through the inverse, on a regular grid of the output space (families with
  a closed-form inverse):   log q_k(z) = log q_0(f_k^{-1}(z)) + log|det d f_k^{-1}/dz|;
* pushed forward, on a grid of the base space carried through the layers
  (every family):           log q_k(f_k(z0)) = log q_0(z0) - log|det d f_k/dz0|,
  which gives the density at the nodes of a deformed mesh (what pcolormesh draws).

f_k is the composition of the first k layers; q_0 is the base density.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nfvae.flows import Flow, FlowSequence

LogProb = Callable[[Tensor], Tensor]


@dataclass
class DensityMap:
    """A density on the nodes of a 2-D mesh: x, y, density all (n, n).

    ``regular`` is True for an axis-aligned grid (through the inverse) and False
    for a mesh pushed through the flow. A pushed mesh also carries
    ``cell_density`` (n - 1, n - 1), what the figures draw: per cell, the mean of
    its corners' exact densities, but no more than the cell's probability mass over
    the area of its image. Where the flow stretches a cell across a gap between two
    lobes, the corners say nothing about the inside of the quadrilateral; its mass
    over its area still does.
    """

    x: Tensor
    y: Tensor
    density: Tensor
    regular: bool
    cell_density: Tensor | None = None


@dataclass(frozen=True)
class Window:
    """The rectangle centre +- half_width (per axis): a grid's extent or a plot's."""

    centre: tuple[float, float]
    half_width: tuple[float, float]

    @classmethod
    def square(cls, low: float, high: float) -> Window:
        if not low < high:
            raise ValueError(f"a window needs low < high, got ({low}, {high})")
        mid, half = 0.5 * (low + high), 0.5 * (high - low)
        return cls((mid, mid), (half, half))

    @classmethod
    def around(cls, points: Tensor, quantile: float = 0.005, margin: float = 0.15,
               min_half_width: float = 1e-3) -> Window:
        """The smallest square holding all but ``quantile`` of ``points`` (N, 2) on each
        side, widened by ``margin`` of its size: a zoom that one outlier cannot spoil."""
        points = points.detach().double().cpu()
        low = torch.quantile(points, quantile, dim=0)
        high = torch.quantile(points, 1 - quantile, dim=0)
        centre = 0.5 * (low + high)
        half = max(float((high - low).max()) * 0.5 * (1 + 2 * margin), min_half_width)
        return cls((float(centre[0]), float(centre[1])), (half, half))

    @property
    def xlim(self) -> tuple[float, float]:
        return (self.centre[0] - self.half_width[0], self.centre[0] + self.half_width[0])

    @property
    def ylim(self) -> tuple[float, float]:
        return (self.centre[1] - self.half_width[1], self.centre[1] + self.half_width[1])

    def grid(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """x, y (n, n) float64 and the nodes (n * n, 2), row-major, of an n x n grid."""
        if n < 2:
            raise ValueError(f"a grid needs at least 2 points per side, got {n}")
        xs = torch.linspace(*self.xlim, n, dtype=torch.float64)
        ys = torch.linspace(*self.ylim, n, dtype=torch.float64)
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        return x, y, torch.stack([x.reshape(-1), y.reshape(-1)], -1)

    def contains(self, points: Tensor) -> Tensor:
        """(N,) bool: which points (N, 2) fall inside."""
        (x0, x1), (y0, y1) = self.xlim, self.ylim
        return ((points[:, 0] >= x0) & (points[:, 0] <= x1)
                & (points[:, 1] >= y0) & (points[:, 1] <= y1))


def _as_layers(flow: Flow) -> list[Flow]:
    return list(flow.layers) if isinstance(flow, FlowSequence) else [flow]


def _expand_context(context: Tensor | None, batch: int) -> Tensor | None:
    if context is None:
        return None
    if context.dim() != 2 or context.shape[0] != 1:
        raise ValueError(f"density maps take the context of one point, (1, H); got "
                         f"{tuple(context.shape)}")
    return context.expand(batch, -1)


def flow_dtype_device(flow: Flow) -> tuple[torch.dtype, torch.device]:
    """Where the flow's parameters live (float32 on the CPU for a flow without any)."""
    param = next(flow.parameters(), None)
    if param is None:
        return torch.float32, torch.device("cpu")
    return param.dtype, param.device


def _to_flow(flow: Flow, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor | None]:
    dtype, device = flow_dtype_device(flow)
    z = z.to(device=device, dtype=dtype)
    ctx = None if context is None else context.to(device=device, dtype=dtype)
    return z, _expand_context(ctx, len(z))


@torch.no_grad()
def push_through_layers(flow: Flow, z0: Tensor, context: Tensor | None = None
                        ) -> tuple[list[Tensor], list[Tensor]]:
    """[z0, z1, ..., zK] and the per-layer log-dets [ld_1, ..., ld_K] of any flow."""
    if isinstance(flow, FlowSequence):
        return flow.trajectory(z0, context)
    z1, log_det = flow(z0, context)
    return [z0, z1], [log_det]


@torch.no_grad()
def layer_densities_inverse(flow: Flow, base_log_prob: LogProb, window: Window, n: int,
                            layers: Sequence[int], context: Tensor | None = None,
                            ) -> list[DensityMap]:
    """q_k on a regular n x n grid over ``window``, for each k in ``layers``, through inverses.

    ``context``: (1, H) for an amortized flow (the density of one data point's posterior).
    """
    all_layers = _as_layers(flow)
    x, y, points = window.grid(n)
    points, ctx = _to_flow(flow, points, context)
    maps = []
    for k in layers:
        z, log_det = points, torch.zeros_like(points[:, 0])
        for layer in reversed(all_layers[:k]):
            z, ld = layer.inverse(z, ctx)
            log_det = log_det + ld
        log_q = (base_log_prob(z) + log_det).double().cpu()
        maps.append(DensityMap(x, y, log_q.exp().view(n, n), regular=True))
    return maps


@torch.no_grad()
def layer_densities_pushforward(flow: Flow, base_log_prob: LogProb, base_window: Window, n: int,
                                layers: Sequence[int], context: Tensor | None = None,
                                ) -> list[DensityMap]:
    """q_k at the nodes of a grid over ``base_window`` (in z0) pushed through k layers."""
    _, _, points = base_window.grid(n)
    z0, ctx = _to_flow(flow, points, context)
    zs, log_dets = push_through_layers(flow, z0, ctx)
    log_q0 = base_log_prob(z0)
    cumulative = [torch.zeros_like(log_q0)]
    for ld in log_dets:
        cumulative.append(cumulative[-1] + ld)
    q0 = log_q0.double().cpu().exp().view(n, n)
    base_x, base_y, _ = base_window.grid(n)
    cell_mass = corner_mean(q0) * quad_areas(base_x, base_y)
    maps = []
    for k in layers:
        zk = zs[k].double().cpu()
        x, y = zk[:, 0].view(n, n), zk[:, 1].view(n, n)
        log_q = (log_q0 - cumulative[k]).double().cpu()
        # The smaller of the corners' mean exact density and the cell's mass over its
        # image's area: a cell stretched across a gap (mass spread thin) is drawn by
        # the second, a sliver squeezed in a fold (its straight-edged area too small)
        # by the first; elsewhere the two agree.
        density = log_q.exp().view(n, n)
        spread = cell_mass / quad_areas(x, y).clamp_min(1e-300)
        cells = torch.minimum(corner_mean(density), spread)
        maps.append(DensityMap(x, y, density, regular=False, cell_density=cells))
    return maps


def corner_mean(values: Tensor) -> Tensor:
    """(n, n) node values -> (n - 1, n - 1) means over each cell's four corners."""
    return 0.25 * (values[:-1, :-1] + values[:-1, 1:] + values[1:, :-1] + values[1:, 1:])


def quad_areas(x: Tensor, y: Tensor) -> Tensor:
    """Areas (n - 1, n - 1) of the quadrilateral cells of a mesh with nodes x, y (n, n)
    (the shoelace formula over the corners in order)."""
    corners = [(x[:-1, :-1], y[:-1, :-1]), (x[:-1, 1:], y[:-1, 1:]),
               (x[1:, 1:], y[1:, 1:]), (x[1:, :-1], y[1:, :-1])]
    twice = sum(xa * yb - xb * ya for (xa, ya), (xb, yb) in zip(corners, corners[1:] + corners[:1]))
    return 0.5 * twice.abs()


def layer_densities(flow: Flow, base_log_prob: LogProb, window: Window, base_window: Window,
                    n: int, layers: Sequence[int], context: Tensor | None = None,
                    ) -> list[DensityMap]:
    """Through the inverse on a grid over ``window`` where every layer has an inverse,
    else pushed forward from a grid over ``base_window``, which should hold nearly
    all of the base distribution's mass."""
    if flow.has_inverse:
        return layer_densities_inverse(flow, base_log_prob, window, n, layers, context)
    return layer_densities_pushforward(flow, base_log_prob, base_window, n, layers, context)


@torch.no_grad()
def density_on_grid(log_prob: LogProb, window: Window, n: int) -> DensityMap:
    """exp(log_prob) on a regular n x n grid over ``window`` (points given in float64)."""
    x, y, points = window.grid(n)
    log_p = log_prob(points).double().cpu()
    return DensityMap(x, y, log_p.exp().view(n, n), regular=True)


def grid_lines(window: Window, num_lines: int, points_per_line: int = 100) -> Tensor:
    """Horizontal then vertical lines across ``window``: (2 * num_lines, points, 2)."""
    def span(lim, num):
        return torch.linspace(lim[0], lim[1], num, dtype=torch.float64)

    xs, ys = span(window.xlim, points_per_line), span(window.ylim, points_per_line)
    x_at, y_at = span(window.xlim, num_lines), span(window.ylim, num_lines)
    horizontal = torch.stack([xs.expand(num_lines, -1), y_at[:, None].expand(-1, len(xs))], -1)
    vertical = torch.stack([x_at[:, None].expand(-1, len(ys)), ys.expand(num_lines, -1)], -1)
    return torch.cat([horizontal, vertical])


@torch.no_grad()
def push_lines(flow: Flow, lines: Tensor, context: Tensor | None = None) -> list[Tensor]:
    """Each layer's image of the lines (L, P, 2): a list of K + 1 such tensors."""
    flat, ctx = _to_flow(flow, lines.reshape(-1, lines.shape[-1]), context)
    zs, _ = push_through_layers(flow, flat, ctx)
    return [z.double().cpu().view(lines.shape) for z in zs]


def evenly_spaced_layers(num_layers: int, max_panels: int) -> list[int]:
    """k = 0..K, thinned to at most ``max_panels`` evenly spaced values keeping 0 and K."""
    if max_panels < 2:
        raise ValueError(f"max_panels must be >= 2, got {max_panels}")
    if num_layers + 1 <= max_panels:
        return list(range(num_layers + 1))
    picks = torch.linspace(0, num_layers, max_panels).round().long().tolist()
    return sorted(set(picks))
