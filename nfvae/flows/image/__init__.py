"""Normalizing flows over images: multi-scale Glow and RealNVP as plain nn.Modules.

Layers follow the ``Flow`` contract on (B, C, H, W): ``forward`` samples (latent ->
image), ``inverse`` evaluates densities (image -> latent). ``MultiscaleFlow`` is the
model; ``preprocess`` holds the data path (dequantization, logit, bits/dim).
"""

from nfvae.flows.image.actnorm import ActNorm2d
from nfvae.flows.image.coupling import ChannelCoupling, CheckerboardCoupling, ConvConditioner
from nfvae.flows.image.invconv import InvConv1x1
from nfvae.flows.image.multiscale import MultiscaleFlow
from nfvae.flows.image.permutation import ChannelPermutation, channel_mixer
from nfvae.flows.image.preprocess import Center, Logit, bits_per_dim, dequantize, preprocessing
from nfvae.flows.image.priors import SplitPrior, TopPrior
from nfvae.flows.image.squeeze import squeeze, unsqueeze

__all__ = [
    "ActNorm2d",
    "Center",
    "ChannelCoupling",
    "ChannelPermutation",
    "CheckerboardCoupling",
    "ConvConditioner",
    "InvConv1x1",
    "Logit",
    "MultiscaleFlow",
    "SplitPrior",
    "TopPrior",
    "bits_per_dim",
    "channel_mixer",
    "dequantize",
    "preprocessing",
    "squeeze",
    "unsqueeze",
]
