"""Normalizing flows in the sampling direction z0 -> zK, one family per module.

``FLOW_FAMILIES`` names every family; the generic tests iterate over it, so a
family added here is put under every log-det, gradient and inverse test.
"""

from nfvae.flows.base import (
    AmortizedParameters,
    Flow,
    FlowSequence,
    GlobalParameters,
    InverseNotAvailable,
    ParametrizedFlow,
    stack,
)
from nfvae.flows.planar import PlanarFlow
from nfvae.flows.radial import RadialFlow

FLOW_FAMILIES: dict[str, type[Flow]] = {
    "planar": PlanarFlow,
    "radial": RadialFlow,
}

__all__ = [
    "FLOW_FAMILIES",
    "AmortizedParameters",
    "Flow",
    "FlowSequence",
    "GlobalParameters",
    "InverseNotAvailable",
    "ParametrizedFlow",
    "PlanarFlow",
    "RadialFlow",
    "stack",
]
