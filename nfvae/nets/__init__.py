"""Encoders and decoders as plain nn.Modules.

An encoder maps x (B, *data_shape) to features (B, out_dim): the context from
which the VAE reads q0's parameters and amortized flows read theirs. A decoder
maps z (N, D) to likelihood parameters (N, num_params, *data_shape).
"""

from nfvae.nets.conv import ConvDecoder, ConvEncoder
from nfvae.nets.gated_conv import (
    GatedConv2d,
    GatedConvDecoder,
    GatedConvEncoder,
    GatedConvTranspose2d,
)
from nfvae.nets.mlp import MLPDecoder, MLPEncoder

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "GatedConv2d",
    "GatedConvDecoder",
    "GatedConvEncoder",
    "GatedConvTranspose2d",
    "MLPDecoder",
    "MLPEncoder",
]
