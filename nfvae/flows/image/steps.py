"""The steps of one level of a multi-scale image flow, in the data direction.

Glow (Kingma & Dhariwal 2018, Fig. 2): after the level's squeeze, K steps of

    ActNorm -> channel mixer (invconv | reverse | shuffle) -> channel coupling,

the coupling keeping the same half, since the mixer moves channels between halves.

RealNVP (Dinh et al. 2017, Sec. 3.6): K couplings under the checkerboard mask
(alternating parity) before the squeeze, then K under the channel mask (alternating
halves) after it. Each coupling is preceded by an ActNorm in place of the paper's
batch normalisation, whose test-time statistics differ from its training ones.
"""

from __future__ import annotations

from nfvae.flows.base import Flow, FlowSequence
from nfvae.flows.image.actnorm import ActNorm2d
from nfvae.flows.image.base import data_order
from nfvae.flows.image.coupling import ChannelCoupling, CheckerboardCoupling
from nfvae.flows.image.permutation import channel_mixer


def glow_steps(channels: int, num_steps: int, hidden_channels: int, coupling: str,
               permutation: str, max_log_scale: float) -> FlowSequence:
    """K Glow steps over ``channels`` (the squeezed level's) channels."""
    layers: list[Flow] = []
    for _ in range(num_steps):
        layers += [ActNorm2d(channels), channel_mixer(permutation, channels),
                   ChannelCoupling(channels, hidden_channels, coupling, max_log_scale)]
    return data_order(layers)


def realnvp_steps(channels: int, num_steps: int, hidden_channels: int, coupling: str,
                  max_log_scale: float, mask: str) -> FlowSequence:
    """K ActNorm + coupling pairs under the 'checkerboard' or 'channel' mask, alternating."""
    layers: list[Flow] = []
    for k in range(num_steps):
        if mask == "checkerboard":
            step: Flow = CheckerboardCoupling(channels, hidden_channels, coupling,
                                              max_log_scale, parity=k)
        elif mask == "channel":
            step = ChannelCoupling(channels, hidden_channels, coupling, max_log_scale,
                                   swap=k % 2 == 1)
        else:
            raise ValueError(f"mask must be 'checkerboard' or 'channel', got {mask!r}")
        layers += [ActNorm2d(channels), step]
    return data_order(layers)
