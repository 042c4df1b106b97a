"""The VAE's prior p(zK): the standard normal, or a flow over it (``conf/prior/``).

    standard_normal:  log p(z) = log N(z; 0, I)
    flow:             z = f(u), u ~ N(0, I),   log p(z) = log N(f^{-1}(z)) + log|det df^{-1}/dz|

The flow prior is a ``FlowDistribution`` with global parameters (the prior sees no
data point, so there is no context to amortize over), learned with the rest of the
VAE: the ELBO and the importance-sampled log-likelihood need log p(zK) of the
posterior's samples, which runs the flow backwards, so the family must have a
closed-form inverse (``Flow.has_inverse``); drawing from the prior runs it forwards.
It starts as N(0, I) exactly: coupling and spline layers start as the identity,
Householder reflections and Glow's LU map start as rotations (which leave N(0, I)
as it is), and ActNorm starts at the identity instead of standardising a first
batch (the latents it would see are those of an untrained encoder). IAF does not
start at the identity (its forget gate scales z by sigmoid(forget_bias)).
Both priors offer ``log_prob(z)``, ``sample(n)`` and ``push(u)`` (a draw for given
base noise u); the standard normal adds nothing to a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

from nfvae.distributions import FlowDistribution, StandardNormal
from nfvae.flows import FLOW_FAMILIES, ActNorm, FlowSequence


def standard_normal_prior(dim: int, name: str = "standard_normal") -> StandardNormal:
    """p(z) = N(0, I_dim); ``name`` is the config's label (for the HParams tab)."""
    return StandardNormal(dim)


def flow_prior(dim: int, flow: Callable[..., FlowSequence], name: str = "flow"
               ) -> FlowDistribution:
    """p(z) = N(0, I) pushed through ``flow`` (a ``conf/flow/`` partial, completed here
    with the latent size), with global parameters.

    Raises ``ValueError`` for an amortized flow or one without a closed-form inverse,
    naming the families that would do.
    """
    if getattr(flow, "keywords", {}).get("amortized"):
        raise ValueError(
            "prior.flow.amortized must be false: the prior p(z) sees no data point, so there "
            "is no encoder context for its flow to take parameters from")
    flows = flow(dim=dim, context_dim=None)
    if not flows.has_inverse:
        invertible = sorted(n for n, family in FLOW_FAMILIES.items() if family.has_inverse)
        family = getattr(flow, "keywords", {}).get("name") or type(flows).__name__
        raise ValueError(
            f"prior=flow needs a flow family with a closed-form inverse (log p(z) of the "
            f"posterior's samples runs the flow backwards), and '{family}' has none. Families "
            f"with one: {', '.join(invertible)} (e.g. flow@prior.flow=realnvp)")
    for norm in flows.modules():
        if isinstance(norm, ActNorm):
            norm.initialized.fill_(True)
    return FlowDistribution(StandardNormal(dim), flows)
