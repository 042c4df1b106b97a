"""2-D density experiments: a flow on its own, from N(0, I) to a target density."""

from nfvae.toy.data import BaseNoiseDataModule, TargetSamplesDataModule
from nfvae.toy.module import MaximumLikelihoodModule, ReverseKLModule, ToyDensityModule
from nfvae.toy.targets import (
    U1,
    U2,
    U3,
    U4,
    Checkerboard,
    EightGaussians,
    EnergyTarget,
    Rings,
    SampleTarget,
    Target,
    TwoMoons,
)

__all__ = [
    "U1", "U2", "U3", "U4", "BaseNoiseDataModule", "Checkerboard", "EightGaussians",
    "EnergyTarget", "MaximumLikelihoodModule", "ReverseKLModule", "Rings", "SampleTarget",
    "Target", "TargetSamplesDataModule", "ToyDensityModule", "TwoMoons",
]
