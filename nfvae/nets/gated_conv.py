"""Gated convolutional encoder and decoder of the Sylvester-flows paper
(van den Berg et al. 2018, after Tomczak & Welling 2016 and Dauphin et al. 2017).

A gated layer computes h = (W1 * x + b1) . sigmoid(W2 * x + b2): the sigmoid gate
decides per unit and position how much of the linear response passes.

Encoder (C, H, W) -> 256-d context, as in the paper for 28x28 inputs:

    gated conv 5x5  C -> 32        gated conv 5x5 /2 32 -> 32
    gated conv 5x5 32 -> 64        gated conv 5x5 /2 64 -> 64
    gated conv 5x5 64 -> 64        gated conv (H/4 x W/4), no padding, 64 -> 256

The last kernel spans the whole remaining map (7x7 for 28x28, 7x5 for 28x20), so
the context is a 256-vector whatever the image size. The decoder mirrors it with
gated transposed convolutions from z (D, 1, 1) and ends in a 1x1 convolution to
``num_params`` maps per channel (logits, or mean and log-scale).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nfvae.nets.shapes import check_image_shape, halved_sides, upsampling_paddings


class _Gated(nn.Module):
    """h(x) . sigmoid(g(x)) for two layers ``h`` and ``g`` of the same geometry."""

    h: nn.Module
    g: nn.Module

    def forward(self, x: Tensor) -> Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class GatedConv2d(_Gated):
    """(W1 * x + b1) . sigmoid(W2 * x + b2) with two convolutions of the same geometry."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.h = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
        self.g = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)


class GatedConvTranspose2d(_Gated):
    """The transposed-convolution counterpart of GatedConv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0):
        super().__init__()
        self.h = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding,
                                    output_padding)
        self.g = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding,
                                    output_padding)


class GatedConvEncoder(nn.Module):
    """x (B, C, H, W) -> context (B, out_dim); ``channels`` are the paper's (32, 64)."""

    def __init__(self, data_shape: Sequence[int], out_dim: int = 256,
                 channels: Sequence[int] = (32, 64)):
        super().__init__()
        c, height, width = check_image_shape(data_shape, "GatedConvEncoder")
        c1, c2 = (int(ch) for ch in channels)
        last_kernel = (halved_sides(height, 2)[-1], halved_sides(width, 2)[-1])
        self.net = nn.Sequential(
            GatedConv2d(c, c1, 5, 1, 2),
            GatedConv2d(c1, c1, 5, 2, 2),
            GatedConv2d(c1, c2, 5, 1, 2),
            GatedConv2d(c2, c2, 5, 2, 2),
            GatedConv2d(c2, c2, 5, 1, 2),
            GatedConv2d(c2, out_dim, last_kernel, 1, 0),
        )
        self.out_dim = int(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)


class GatedConvDecoder(nn.Module):
    """z (N, D) -> likelihood parameters (N, num_params, C, H, W), mirroring the encoder."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], num_params: int = 1,
                 channels: Sequence[int] = (32, 64)):
        super().__init__()
        c, height, width = check_image_shape(data_shape, "GatedConvDecoder")
        c1, c2 = (int(ch) for ch in channels)
        hs, ws = halved_sides(height, 2), halved_sides(width, 2)
        pad1, pad0 = upsampling_paddings(hs, ws)
        self.data_shape = (c, height, width)
        self.num_params = num_params
        self.net = nn.Sequential(
            GatedConvTranspose2d(latent_dim, c2, (hs[2], ws[2]), 1, 0),
            GatedConvTranspose2d(c2, c2, 5, 1, 2),
            GatedConvTranspose2d(c2, c1, 5, 2, 2, pad1),
            GatedConvTranspose2d(c1, c1, 5, 1, 2),
            GatedConvTranspose2d(c1, c1, 5, 2, 2, pad0),
            GatedConvTranspose2d(c1, c1, 5, 1, 2),
            nn.Conv2d(c1, num_params * c, 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        out = self.net(z.view(z.shape[0], -1, 1, 1))
        return out.view(z.shape[0], self.num_params, *self.data_shape)
