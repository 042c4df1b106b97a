"""From a DataModule's images to the image flow's input, and bits/dim.

DataModules yield grey levels as floats in [0, 1] (MNIST: x / 255; digits: k / 16).
The flow models 8-bit images (``num_levels`` K = 256): an image becomes integer
levels n = round((K - 1) x), is zero-padded to ``pad_to`` where squeezing needs it
(MNIST 28 -> 32), and is dequantized to v = (n + u) / K with u ~ U[0, 1)^D
(``nfvae.flows.image.dequantize``). MNIST's levels come back exactly; digits'
17 levels k map to round(255 k / 16) (0, 16, 32, ..., 239, 255).

Bits/dim on the discrete data, in the usual convention,

    bits/dim = (-log p(v) + D_model log K) / (D_data log 2),

where D_model counts the flow's (padded) pixels and D_data the image's own. Without
padding this is nfvae.flows.image.bits_per_dim, log2 K = 8 for the uniform density.
With padding it stays an upper bound on the unpadded image's bits/dim: the padded
pixels are always level 0, and P(image) >= P(image, padding = 0), which the
dequantized density bounds from below.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from nfvae.evaluation import stream_seed


def image_levels(x: Tensor, num_levels: int = 256) -> Tensor:
    """Images in [0, 1] (as DataModules yield them) -> integer levels 0..K-1 (float)."""
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"image flows expect images in [0, 1], got values in "
                         f"[{x.min().item():.4g}, {x.max().item():.4g}]")
    return torch.round(x * (num_levels - 1))


def pad_images(x: Tensor, size: tuple[int, int] | None, value: float = 0.0) -> Tensor:
    """Centre (B, C, H, W) in a (B, C, *size) canvas of ``value``; None keeps the size."""
    if size is None:
        return x
    dh, dw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if dh < 0 or dw < 0:
        raise ValueError(f"cannot pad {tuple(x.shape[-2:])} images to {tuple(size)}")
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), value=value)


def crop_images(x: Tensor, shape: tuple[int, int]) -> Tensor:
    """The inverse of ``pad_images``: the centred (H, W) part."""
    top, left = (x.shape[-2] - shape[0]) // 2, (x.shape[-1] - shape[1]) // 2
    return x[..., top:top + shape[0], left:left + shape[1]]


def example_uniform(index: Tensor, shape: tuple[int, ...], seed: int, draw: int,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """U[0, 1) noise (B, *shape), fixed by (seed, example index, draw): the dequantization
    noise of evaluation, the same whatever the batch, rank or device."""
    rows = [torch.rand(shape, dtype=dtype,
                       generator=torch.Generator().manual_seed(stream_seed(seed, int(i), draw)))
            for i in index.reshape(-1).tolist()]
    return torch.stack(rows) if rows else torch.empty((0, *shape), dtype=dtype)


def bits_per_dim(nll: Tensor, num_dims: int) -> Tensor:
    """Discrete negative log-likelihood in nats per image -> bits per (data) dimension."""
    return nll / (num_dims * math.log(2.0))
