"""Glow's learned Gaussian priors (Kingma & Dhariwal 2018, "Glow"; the split of Dinh
et al. 2017, "Real NVP", Sec. 3.6), written as standardisations:

    split:  x = [h, z],   p(z | h) = N(z; mu(h), diag exp(2 log_sigma(h))),
            [mu, log_sigma] = conv3x3(h)  (weights and bias start at zero),
    top:    p(z) = N(z; mu, diag exp(2 log_sigma)),  mu, log_sigma learned, start at zero,
    eps = (z - mu) exp(-log_sigma),   log|d eps / dz| = -sum log_sigma,

so log p(z | h) = log N(eps; 0, I) - sum log_sigma, and the whole image model is one
bijection x -> (eps_1, ..., eps_L) onto standard normal noise. Sampling at temperature
T draws eps ~ N(0, T^2 I), i.e. z ~ N(mu, T^2 sigma^2) as in Glow.

Glow leaves log_sigma unbounded. ``max_log_scale`` = c soft-clamps it as the affine
couplings clamp theirs, log_sigma = c tanh(raw / c). A Glow trained on MNIST keeps its
prior log-scales within [-0.7, 0.7] on MNIST digits, but an unusual image (inverted
digits, noise, one training image at step 2044) drives the conditional prior's
log_sigma to -8e6 and beyond; eps = (z - mu) exp(-log_sigma) then overflows float32 and
log p is -inf (a NaN loss in training). None keeps Glow's prior, and with it every
checkpoint trained before the option existed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nfvae.flows.coupling import soft_clamp
from nfvae.flows.image.base import check_image, per_image


def standardize(z: Tensor, mean: Tensor, log_scale: Tensor) -> tuple[Tensor, Tensor]:
    """z -> eps = (z - mean) exp(-log_scale), and log|d eps/dz| (B,)."""
    return (z - mean) * torch.exp(-log_scale), -per_image(log_scale.expand_as(z), z)


def unstandardize(eps: Tensor, mean: Tensor, log_scale: Tensor) -> tuple[Tensor, Tensor]:
    """eps -> z = mean + exp(log_scale) eps, and log|dz/d eps| (B,)."""
    return mean + torch.exp(log_scale) * eps, per_image(log_scale.expand_as(eps), eps)


def _check_bound(max_log_scale: float | None) -> float | None:
    if max_log_scale is not None and not max_log_scale > 0:
        raise ValueError(f"prior_max_log_scale must be > 0 or null, got {max_log_scale}")
    return None if max_log_scale is None else float(max_log_scale)


class SplitPrior(nn.Module):
    """Half the channels leave with a Gaussian prior conditioned on the kept half."""

    def __init__(self, channels: int, max_log_scale: float | None = None):
        super().__init__()
        self.max_log_scale = _check_bound(max_log_scale)
        if channels < 2:
            raise ValueError(f"a split needs >= 2 channels, got {channels}")
        self.channels = channels
        self.kept = channels - channels // 2
        self.conv = nn.Conv2d(self.kept, 2 * (channels // 2), 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def _prior(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_scale = self.conv(h).chunk(2, dim=1)
        return mean, soft_clamp(log_scale, self.max_log_scale)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, C, H, W) -> (h (B, C - C//2, H, W), eps (B, C//2, H, W), log_det (B,))."""
        check_image(x, self.channels, "SplitPrior")
        h, z = x[:, :self.kept], x[:, self.kept:]
        eps, log_det = standardize(z, *self._prior(h))
        return h, eps, log_det

    def join(self, h: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """The inverse of ``split``: (h, eps) -> (x, log|dx/d eps|)."""
        check_image(h, self.kept, "SplitPrior.join (kept half)")
        z, log_det = unstandardize(eps, *self._prior(h))
        return torch.cat([h, z], dim=1), log_det


class TopPrior(nn.Module):
    """The learned Gaussian of the top level's latent (C, H, W)."""

    def __init__(self, shape: tuple[int, int, int], max_log_scale: float | None = None):
        super().__init__()
        self.max_log_scale = _check_bound(max_log_scale)
        self.mean = nn.Parameter(torch.zeros(shape))
        self.log_scale = nn.Parameter(torch.zeros(shape))

    def _log_scale(self) -> Tensor:
        return soft_clamp(self.log_scale, self.max_log_scale)

    def standardize(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return standardize(z, self.mean, self._log_scale())

    def unstandardize(self, eps: Tensor) -> tuple[Tensor, Tensor]:
        return unstandardize(eps, self.mean, self._log_scale())
