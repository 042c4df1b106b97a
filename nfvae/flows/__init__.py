"""Normalizing flows in the sampling direction z0 -> zK, one family per module.

``FLOW_FAMILIES`` names every family; the generic tests iterate over it, so a
family added here is put under every log-det, gradient and inverse test.
Every family is built as ``Family(dim, context_dim=None, amortized=True, **options)``.
"""

from nfvae.flows.actnorm import ActNorm, initialize_by_inverse, uninitialized_actnorms
from nfvae.flows.base import (
    AmortizedParameters,
    Flow,
    FlowSequence,
    GlobalParameters,
    InverseNotAvailable,
    NetworkFlow,
    ParametrizedFlow,
    build_layers,
    stack,
)
from nfvae.flows.glow import GlowStep
from nfvae.flows.householder import HouseholderFlow
from nfvae.flows.iaf import IAFFlow
from nfvae.flows.lu_linear import LULinear
from nfvae.flows.mixed import mixed
from nfvae.flows.planar import PlanarFlow
from nfvae.flows.radial import RadialFlow
from nfvae.flows.realnvp import AffineCouplingFlow
from nfvae.flows.spline import SplineCouplingFlow
from nfvae.flows.sylvester_householder import HouseholderSylvesterFlow
from nfvae.flows.sylvester_orthogonal import OrthogonalSylvesterFlow
from nfvae.flows.sylvester_triangular import TriangularSylvesterFlow

FLOW_FAMILIES: dict[str, type[Flow]] = {
    "planar": PlanarFlow,
    "radial": RadialFlow,
    "householder": HouseholderFlow,
    "sylvester_orthogonal": OrthogonalSylvesterFlow,
    "sylvester_householder": HouseholderSylvesterFlow,
    "sylvester_triangular": TriangularSylvesterFlow,
    "iaf": IAFFlow,
    "realnvp": AffineCouplingFlow,
    "glow": GlowStep,
    "spline": SplineCouplingFlow,
}

__all__ = [
    "FLOW_FAMILIES",
    "ActNorm",
    "AffineCouplingFlow",
    "AmortizedParameters",
    "Flow",
    "FlowSequence",
    "GlobalParameters",
    "GlowStep",
    "HouseholderFlow",
    "HouseholderSylvesterFlow",
    "IAFFlow",
    "InverseNotAvailable",
    "LULinear",
    "NetworkFlow",
    "OrthogonalSylvesterFlow",
    "ParametrizedFlow",
    "PlanarFlow",
    "RadialFlow",
    "SplineCouplingFlow",
    "TriangularSylvesterFlow",
    "build_layers",
    "initialize_by_inverse",
    "mixed",
    "stack",
    "uninitialized_actnorms",
]
