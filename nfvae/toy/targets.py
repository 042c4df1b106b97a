"""2-D target densities for flows on their own (no VAE).

Two kinds, told apart by what the training needs:

* ``EnergyTarget``: an unnormalised density exp(-U(z)) that can be evaluated but
  not sampled; a flow learns it by reverse KL, E_q[log q(z) + U(z)]. The four
  energies of Rezende & Mohamed (2015, Table 1) are here. Their normaliser
  log Z is computed numerically on a fine grid, so KL(q || p) = loss + log Z.
* ``SampleTarget``: a distribution known by samples (two moons, rings, 8
  Gaussians, checkerboard); a flow learns it by maximum likelihood. Each one
  also has an exact (or quadrature-exact) normalised ``log_prob`` so that
  KL(p || q) = E_p[log p - log q] can be reported and the target drawn.

Every target carries ``bounds``, the square its figures are drawn on.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

_LOG_2PI = math.log(2 * math.pi)


class Target:
    """A density on R^2 with a plotting box ``bounds = (low, high)`` for both axes."""

    dim = 2
    #: log_prob integrates to one (False for energies: exp(-U) is unnormalised).
    normalized = True

    def __init__(self, bounds: tuple[float, float] = (-4.0, 4.0)):
        low, high = (float(b) for b in bounds)
        if not low < high:
            raise ValueError(f"target bounds must be (low, high) with low < high, got {bounds}")
        self.bounds = (low, high)

    @property
    def name(self) -> str:
        return type(self).__name__

    def log_prob(self, z: Tensor) -> Tensor:
        """log density (normalised or not, see ``normalized``) of z (B, 2) -> (B,)."""
        raise NotImplementedError

    #: Names of the regions a model must cover (mixture components, rings, lobes);
    #: empty for targets without distinct modes.
    mode_names: tuple[str, ...] = ()

    def mode_of(self, z: Tensor) -> Tensor:
        """The mode each point (B, 2) belongs to, as an index into ``mode_names``: (B,)."""
        raise NotImplementedError(f"{self.name} declares no modes")

    def _check(self, z: Tensor) -> None:
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"{self.name} expects points of shape (B, 2), got {tuple(z.shape)}")

    def grid_log_normalizer(self, half_width: float = 8.0, points: int = 1601) -> float:
        """log of the integral of exp(log_prob) by the midpoint rule on a square grid (float64)."""
        edges = torch.linspace(-half_width, half_width, points + 1, dtype=torch.float64)
        centres = 0.5 * (edges[1:] + edges[:-1])
        cell = (edges[1] - edges[0]).item() ** 2
        total = []
        for row in centres.split(200):  # rows of the grid in chunks bound the memory
            z = torch.cartesian_prod(row, centres)
            total.append(torch.logsumexp(self.log_prob(z), 0))
        return float(torch.logsumexp(torch.stack(total), 0)) + math.log(cell)


# --------------------------------------------------------------------------------------
# Energies of Rezende & Mohamed (2015), Table 1


def _w1(z1: Tensor) -> Tensor:
    return torch.sin(2 * math.pi * z1 / 4)


def _w2(z1: Tensor) -> Tensor:
    return 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)


def _w3(z1: Tensor) -> Tensor:
    return 3 * torch.sigmoid((z1 - 1) / 0.3)


def _two_wells(a: Tensor, b: Tensor) -> Tensor:
    """-log(exp(-a^2/2) + exp(-b^2/2)), stably."""
    return -torch.logaddexp(-0.5 * a**2, -0.5 * b**2)


class EnergyTarget(Target):
    """p(z) proportional to exp(-U(z)); subclasses write ``energy``.

    U2-U4 do not decay along z1 (exp(-U) is not integrable on R^2); the paper
    draws them on [-4, 4]^2. Outside |z1| <= ``wall`` we add the wall
    (|z1| - wall)^2 / (2 * 0.2^2), which leaves the density inside the box exactly
    the paper's and makes it normalisable, so reverse KL has a minimum.
    """

    normalized = False
    has_wall = False

    def __init__(self, bounds: tuple[float, float] = (-4.0, 4.0), wall: float = 4.0):
        super().__init__(bounds)
        self.wall = float(wall)

    def energy(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def log_prob(self, z: Tensor) -> Tensor:
        self._check(z)
        log_p = -self.energy(z)
        if self.has_wall:
            outside = (z[:, 0].abs() - self.wall).clamp_min(0)
            log_p = log_p - 0.5 * (outside / 0.2) ** 2
        return log_p

    @cached_property
    def log_normalizer(self) -> float:
        """log Z = log of the integral of exp(-U) over R^2, on a 1601^2 grid over [-8, 8]^2."""
        return self.grid_log_normalizer()


class U1(EnergyTarget):
    """The ring with two lobes:
    0.5 ((||z|| - 2) / 0.4)^2 - log(e^{-0.5((z1 - 2)/0.6)^2} + e^{-0.5((z1 + 2)/0.6)^2})."""

    mode_names = ("left lobe", "right lobe")

    def energy(self, z: Tensor) -> Tensor:
        z1 = z[:, 0]
        ring = 0.5 * ((z.norm(dim=1) - 2) / 0.4) ** 2
        return ring + _two_wells((z1 - 2) / 0.6, (z1 + 2) / 0.6)

    def mode_of(self, z: Tensor) -> Tensor:
        return (z[:, 0] > 0).long()


class U2(EnergyTarget):
    """One sine wave: 0.5 ((z2 - w1(z)) / 0.4)^2, w1 = sin(2 pi z1 / 4)."""

    has_wall = True

    def energy(self, z: Tensor) -> Tensor:
        return 0.5 * ((z[:, 1] - _w1(z[:, 0])) / 0.4) ** 2


class U3(EnergyTarget):
    """Two sine waves split by a bump:
    -log(e^{-0.5((z2 - w1)/0.35)^2} + e^{-0.5((z2 - w1 + w2)/0.35)^2}),
    w2 = 3 exp(-0.5((z1 - 1)/0.6)^2)."""

    has_wall = True

    mode_names = ("upper wave", "lower wave")

    def energy(self, z: Tensor) -> Tensor:
        z1, z2 = z[:, 0], z[:, 1]
        w1 = _w1(z1)
        return _two_wells((z2 - w1) / 0.35, (z2 - w1 + _w2(z1)) / 0.35)

    def mode_of(self, z: Tensor) -> Tensor:
        z1, z2 = z[:, 0], z[:, 1]
        w1 = _w1(z1)
        return ((z2 - w1 + _w2(z1)).abs() < (z2 - w1).abs()).long()


class U4(EnergyTarget):
    """Two sine waves split by a step:
    -log(e^{-0.5((z2 - w1)/0.4)^2} + e^{-0.5((z2 - w1 + w3)/0.35)^2}),
    w3 = 3 sigmoid((z1 - 1)/0.3)."""

    has_wall = True

    mode_names = ("upper wave", "lower wave")

    def energy(self, z: Tensor) -> Tensor:
        z1, z2 = z[:, 0], z[:, 1]
        w1 = _w1(z1)
        return _two_wells((z2 - w1) / 0.4, (z2 - w1 + _w3(z1)) / 0.35)

    def mode_of(self, z: Tensor) -> Tensor:
        z1, z2 = z[:, 0], z[:, 1]
        w1 = _w1(z1)
        return ((z2 - w1 + _w3(z1)).abs() / 0.35 < (z2 - w1).abs() / 0.4).long()


# --------------------------------------------------------------------------------------
# Sample-based targets: sampled for maximum likelihood, with an exact density for figures
# and KL(p || q).


#: Points per chunk times mixture components held at once by the mixture densities.
_MAX_PAIRS = 2**22


def _gaussian_mixture_log_prob(z: Tensor, centres: Tensor, log_weights: Tensor,
                               sigma: float) -> Tensor:
    """log sum_c w_c N(z; centre_c, sigma^2 I) for z (B, 2), centres (C, 2), in chunks
    of points so that memory stays bounded for large grids."""
    centres, log_weights = centres.to(z), log_weights.to(z)
    chunk = max(1, _MAX_PAIRS // len(centres))
    parts = []
    for part in z.split(chunk):
        sq = torch.cdist(part, centres).pow(2)  # (b, C)
        log_n = -0.5 * sq / sigma**2 - 2 * math.log(sigma) - _LOG_2PI
        parts.append(torch.logsumexp(log_n + log_weights, dim=1))
    return torch.cat(parts) if parts else z.new_zeros(0)


class SampleTarget(Target):
    """A target drawn by ``sample``; ``log_prob`` is its normalised density.

    ``sample(n, generator)`` returns points (n, 2) and integer labels (n,) naming
    the component each point came from (the moon, the ring, the mode), used to
    colour figures.
    """

    def sample(self, num: int, generator: torch.Generator | None = None
               ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class TwoMoons(SampleTarget):
    """Two interleaved half circles (as sklearn's make_moons), centred and scaled.

    x = scale * (c_m(t) - shift) + scale * noise * eps, t ~ U(0, pi), m ~ U{0, 1},
    c_0(t) = (cos t, sin t), c_1(t) = (1 - cos t, 0.5 - sin t).
    The density integrates the Gaussian over t by Gauss-Legendre quadrature with
    ``quadrature`` nodes per moon (the integrand is smooth in t but does not vanish
    at the tips, so an equal-weight midpoint rule would converge only as 1/n^2);
    at the default it has converged to 1e-6 in log density (tests/test_toy_targets.py).
    """

    def __init__(self, noise: float = 0.1, scale: float = 2.0, quadrature: int = 96,
                 bounds: tuple[float, float] = (-4.0, 4.0)):
        super().__init__(bounds)
        if noise <= 0 or scale <= 0:
            raise ValueError(f"TwoMoons needs noise > 0 and scale > 0, got {noise}, {scale}")
        self.noise, self.scale, self.quadrature = float(noise), float(scale), int(quadrature)
        self.shift = torch.tensor([0.5, 0.25])

    def _arc(self, t: Tensor, moon: Tensor) -> Tensor:
        outer = torch.stack([torch.cos(t), torch.sin(t)], -1)
        inner = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], -1)
        points = torch.where(moon.unsqueeze(-1).bool(), inner, outer)
        return self.scale * (points - self.shift.to(points))

    def sample(self, num, generator=None):
        t = math.pi * torch.rand(num, generator=generator, dtype=torch.float64)
        moon = torch.randint(0, 2, (num,), generator=generator)
        eps = torch.randn(num, 2, generator=generator, dtype=torch.float64)
        x = self._arc(t, moon) + self.scale * self.noise * eps
        return x.float(), moon

    @cached_property
    def _nodes(self) -> tuple[Tensor, Tensor]:
        """Arc points of both moons and their log weights (summing to one)."""
        u, w = np.polynomial.legendre.leggauss(self.quadrature)
        t = torch.as_tensor((u + 1) * math.pi / 2)  # [-1, 1] -> [0, pi]
        n = self.quadrature
        nodes = torch.cat([self._arc(t, torch.zeros(n)), self._arc(t, torch.ones(n))])
        # (1/pi) int_0^pi dt = (1/2) int_-1^1 du, and each moon has weight 1/2.
        log_weights = torch.as_tensor(np.log(w / 4)).repeat(2)
        return nodes, log_weights

    mode_names = ("upper moon", "lower moon")

    def mode_of(self, z: Tensor) -> Tensor:
        nodes, _ = self._nodes
        nearest = torch.cdist(z.double(), nodes.to(z.device)).argmin(1)
        return (nearest >= self.quadrature).long()

    def log_prob(self, z: Tensor) -> Tensor:
        self._check(z)
        nodes, log_weights = self._nodes
        return _gaussian_mixture_log_prob(z.double(), nodes, log_weights,
                                          self.scale * self.noise).to(z.dtype)


class Rings(SampleTarget):
    """Concentric noisy circles, each ring's weight proportional to its radius.

    A ring of radius r with angle ~ U(0, 2 pi) and Gaussian noise sigma has the
    closed-form density (the Rice distribution in the plane)
    p(z) = exp(-(rho^2 + r^2) / (2 sigma^2)) I0(rho r / sigma^2) / (2 pi sigma^2), rho = ||z||.
    """

    def __init__(self, radii: tuple[float, ...] = (1.0, 2.0, 3.0), noise: float = 0.1,
                 bounds: tuple[float, float] = (-4.0, 4.0)):
        super().__init__(bounds)
        self.radii = torch.tensor([float(r) for r in radii], dtype=torch.float64)
        if len(self.radii) == 0 or (self.radii <= 0).any() or noise <= 0:
            raise ValueError(f"Rings needs positive radii and noise, got {radii}, {noise}")
        self.noise = float(noise)
        self.weights = self.radii / self.radii.sum()
        self.mode_names = tuple(f"ring r={float(r):g}" for r in self.radii)

    def mode_of(self, z: Tensor) -> Tensor:
        rho = z.double().norm(dim=1, keepdim=True)
        return (rho - self.radii.to(rho.device)).abs().argmin(1)

    def sample(self, num, generator=None):
        ring = torch.multinomial(self.weights, num, replacement=True, generator=generator)
        angle = 2 * math.pi * torch.rand(num, generator=generator, dtype=torch.float64)
        eps = torch.randn(num, 2, generator=generator, dtype=torch.float64)
        r = self.radii[ring].unsqueeze(-1)
        x = r * torch.stack([torch.cos(angle), torch.sin(angle)], -1) + self.noise * eps
        return x.float(), ring

    def log_prob(self, z: Tensor) -> Tensor:
        self._check(z)
        rho = z.double().norm(dim=1, keepdim=True)  # (B, 1)
        r, s2 = self.radii.to(rho.device), self.noise**2
        arg = rho * r / s2
        # log I0(x) = log(i0e(x)) + x keeps the Bessel function finite for large x.
        log_i0 = torch.log(torch.special.i0e(arg)) + arg
        log_ring = -(rho**2 + r**2) / (2 * s2) + log_i0 - math.log(2 * math.pi * s2)
        return torch.logsumexp(log_ring + self.weights.to(rho.device).log(), dim=1).to(z.dtype)


class EightGaussians(SampleTarget):
    """Eight equal Gaussians N(radius (cos 2 pi k/8, sin 2 pi k/8), sigma^2 I)."""

    def __init__(self, radius: float = 2.5, sigma: float = 0.3,
                 bounds: tuple[float, float] = (-4.0, 4.0)):
        super().__init__(bounds)
        if radius <= 0 or sigma <= 0:
            raise ValueError(f"EightGaussians needs radius > 0 and sigma > 0, "
                             f"got {radius}, {sigma}")
        angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
        self.centres = float(radius) * torch.stack([torch.cos(angles), torch.sin(angles)], -1)
        self.sigma = float(sigma)
        self.mode_names = tuple(f"Gaussian at {45 * k} degrees" for k in range(8))

    def mode_of(self, z: Tensor) -> Tensor:
        return torch.cdist(z.double(), self.centres.to(z.device)).argmin(1)

    def sample(self, num, generator=None):
        mode = torch.randint(0, 8, (num,), generator=generator)
        eps = torch.randn(num, 2, generator=generator, dtype=torch.float64)
        return (self.centres[mode] + self.sigma * eps).float(), mode

    def log_prob(self, z: Tensor) -> Tensor:
        self._check(z)
        log_weights = torch.full((8,), -math.log(8), dtype=torch.float64)
        return _gaussian_mixture_log_prob(z.double(), self.centres, log_weights,
                                          self.sigma).to(z.dtype)


class Checkerboard(SampleTarget):
    """Uniform on the black squares of a 4x4 board of side ``2 * half_width``.

    Eight squares of side s = half_width / 2 each carry density 1 / (8 s^2);
    the white squares have density 0 (log_prob = -inf).
    """

    def __init__(self, half_width: float = 4.0, bounds: tuple[float, float] = (-4.5, 4.5)):
        super().__init__(bounds)
        if half_width <= 0:
            raise ValueError(f"Checkerboard needs half_width > 0, got {half_width}")
        self.half_width = float(half_width)
        self.side = self.half_width / 2
        self.mode_names = tuple(f"black square {k}" for k in range(8))

    def mode_of(self, z: Tensor) -> Tensor:
        """The black square of the point's column nearest to it (the labels ``sample`` gives)."""
        col = torch.floor(z[:, 0] / self.side).clamp(-2, 1).long()
        row = torch.floor(z[:, 1] / self.side).clamp(-2, 1).long()
        # In column col the black rows are those with (col + row) odd.
        row = torch.where((col + row) % 2 == 1, row, torch.where(row < 1, row + 1, row - 1))
        return ((col + 2) * 4 + (row + 2)) // 2

    def _cells(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return torch.floor(z[:, 0] / self.side), torch.floor(z[:, 1] / self.side)

    def sample(self, num, generator=None):
        # A uniform column, then a uniform black square in it: the black squares of
        # each column alternate, so the row is 2j + (column parity) shifted to [-2, 2).
        col = torch.randint(-2, 2, (num,), generator=generator)
        row = 2 * torch.randint(-1, 1, (num,), generator=generator) + (col % 2 == 0).long()
        within = torch.rand(num, 2, generator=generator, dtype=torch.float64)
        x = (torch.stack([col, row], -1).double() + within) * self.side
        return x.float(), ((col + 2) * 4 + (row + 2)) // 2

    def log_prob(self, z: Tensor) -> Tensor:
        self._check(z)
        i, j = self._cells(z)
        inside = (z.abs() < self.half_width).all(1)
        black = ((i + j) % 2 == 1) & inside
        log_density = -math.log(8 * self.side**2)
        return torch.where(black, torch.full_like(z[:, 0], log_density),
                           torch.full_like(z[:, 0], -math.inf))
