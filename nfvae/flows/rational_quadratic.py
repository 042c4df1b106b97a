"""Monotonic rational-quadratic spline on [-B, B] with linear (identity) tails
(Gregory & Delbourgo 1982; Durkan, Bekasov, Murray & Papamakarios 2019).

Knots (x_k, y_k), k = 0..K, with x_0 = y_0 = -B and x_K = y_K = B, and positive
derivatives d_k at the knots, d_0 = d_K = 1 so the spline meets the identity
tails smoothly. In bin k, with w = x_{k+1} - x_k, s = (y_{k+1} - y_k) / w and
xi = (x - x_k) / w in [0, 1]:

    y = y_k + (y_{k+1} - y_k) [s xi^2 + d_k xi (1 - xi)] / den,
    dy/dx = s^2 [d_{k+1} xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2] / den^2,
    den = s + (d_{k+1} + d_k - 2 s) xi (1 - xi),

which is strictly increasing for positive d_k. The inverse solves a quadratic
for xi (the root in [0, 1], written as 2c / (-b - sqrt(b^2 - 4ac)) to avoid
cancellation). Outside [-B, B] the map is the identity, log-det 0.

Raw parameters per coordinate: K widths, K heights, K - 1 interior derivatives.
Widths and heights are min + (1 - K min) softmax(raw), scaled to 2B;
d = min_d + softplus(raw + c) with c chosen so that raw = 0 gives d = 1: all-zero
raw parameters give equal bins with unit slopes, the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3
_UNIT_DERIVATIVE_SHIFT = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def _knots(raw: Tensor, bound: float, min_size: float) -> tuple[Tensor, Tensor]:
    """Raw (..., K) -> bin sizes (..., K) and knot positions (..., K + 1) on [-B, B]."""
    num_bins = raw.shape[-1]
    if min_size * num_bins >= 1.0:
        raise ValueError(f"spline: {num_bins} bins do not fit with a minimum size {min_size}")
    fractions = min_size + (1.0 - min_size * num_bins) * torch.softmax(raw, dim=-1)
    knots = F.pad(torch.cumsum(fractions, dim=-1), (1, 0))
    knots = (2.0 * knots - 1.0) * bound
    # Pin the ends exactly: cumsum rounding must not leave a gap at +-B.
    knots = torch.cat([knots.new_full(knots.shape[:-1] + (1,), -bound), knots[..., 1:-1],
                       knots.new_full(knots.shape[:-1] + (1,), bound)], dim=-1)
    return knots[..., 1:] - knots[..., :-1], knots


def _derivatives(raw: Tensor) -> Tensor:
    """Raw interior derivatives (..., K - 1) -> all knot derivatives (..., K + 1), ends = 1."""
    inner = MIN_DERIVATIVE + F.softplus(raw + _UNIT_DERIVATIVE_SHIFT)
    return F.pad(inner, (1, 1), value=1.0)


def _gather(values: Tensor, index: Tensor) -> Tensor:
    return values.gather(-1, index).squeeze(-1)


def rational_quadratic_spline(
    x: Tensor, raw_widths: Tensor, raw_heights: Tensor, raw_derivatives: Tensor,
    bound: float, inverse: bool = False,
) -> tuple[Tensor, Tensor]:
    """Elementwise spline. x (...,), raw_widths/heights (..., K), raw_derivatives (..., K - 1).

    Returns (y, log|dy/dx|) for the forward map, or (x, log|dx/dy|) with ``inverse``.
    """
    widths, x_knots = _knots(raw_widths, bound, MIN_BIN_WIDTH)
    heights, y_knots = _knots(raw_heights, bound, MIN_BIN_HEIGHT)
    derivatives = _derivatives(raw_derivatives)

    # Strict: at +-B the spline equals the identity with slope d_0 = d_K = 1, and the
    # identity branch keeps the gradient that clamp() would zero at its ends.
    inside = (x > -bound) & (x < bound)
    # Evaluate on clamped inputs: outside points take the identity below, and
    # their (unused) spline values must stay finite so gradients stay finite.
    x_in = x.clamp(-bound, bound)
    knots = y_knots if inverse else x_knots
    num_bins = widths.shape[-1]
    bin_index = ((x_in.unsqueeze(-1) >= knots[..., :-1]).sum(-1, keepdim=True) - 1)
    bin_index = bin_index.clamp(0, num_bins - 1)

    x_k, y_k = _gather(x_knots, bin_index), _gather(y_knots, bin_index)
    w, h = _gather(widths, bin_index), _gather(heights, bin_index)
    d_k = _gather(derivatives, bin_index)
    d_k1 = _gather(derivatives, bin_index + 1)
    s = h / w
    curvature = d_k1 + d_k - 2.0 * s

    if inverse:
        dy = x_in - y_k
        a = h * (s - d_k) + dy * curvature
        b = h * d_k - dy * curvature
        c = -s * dy
        discriminant = (b * b - 4.0 * a * c).clamp_min(0.0)
        xi = (2.0 * c) / (-b - torch.sqrt(discriminant))
    else:
        xi = (x_in - x_k) / w
    xi_1m = xi * (1.0 - xi)
    denominator = s + curvature * xi_1m
    out = x_k + xi * w if inverse else y_k + h * (s * xi * xi + d_k * xi_1m) / denominator
    log_slope = (2.0 * torch.log(s)
                 + torch.log(d_k1 * xi * xi + 2.0 * s * xi_1m + d_k * (1.0 - xi) ** 2)
                 - 2.0 * torch.log(denominator))
    if inverse:
        log_slope = -log_slope
    out = torch.where(inside, out, x)
    return out, torch.where(inside, log_slope, torch.zeros_like(log_slope))
