"""FlowDistribution against closed forms: affine flows give Gaussians, rotations keep
N(0, I), and every invertible family's density integrates to the probability its
samples put in the same box."""

from __future__ import annotations

import functools

import pytest
import torch
from torch.distributions import MultivariateNormal

from nfvae.distributions import FlowDistribution, standard_normal
from nfvae.flows import (
    FLOW_FAMILIES,
    ActNorm,
    FlowSequence,
    HouseholderFlow,
    InverseNotAvailable,
    LULinear,
    stack,
)

F64 = torch.float64
SMALL_NETS = {"hidden_dims": (32, 32)}


def small_family(name: str):
    """The registry family, with small conditioner networks where it has them."""
    family = FLOW_FAMILIES[name]
    if name in {"iaf", "realnvp", "glow", "spline"}:
        return functools.partial(family, **SMALL_NETS)
    return family


def random_global_stack(name: str, dim: int = 2, num_layers: int = 3, seed: int = 0):
    """A global float64 stack with parameters away from the identity start."""
    torch.manual_seed(seed)
    flows = stack(dim, None, family=small_family(name), num_layers=num_layers,
                  amortized=False).double()
    with torch.no_grad():
        for p in flows.parameters():
            p.normal_(0.0, 0.5 / (p.shape[-1] ** 0.5 if p.dim() > 1 else 1))
        for m in flows.modules():  # Glow's scales compound over layers: keep them mild
            if isinstance(m, ActNorm):
                m.log_scale.normal_(0.0, 0.2)
                m.initialized.fill_(True)
            if isinstance(m, LULinear):
                m.log_s.normal_(0.0, 0.2)
    return flows


def test_affine_flow_gives_the_gaussian_with_the_pushed_forward_moments():
    """x = W (e^s z + t), z ~ N(0, I)  =>  x ~ N(W t, W diag(e^{2s}) W^T)."""
    torch.manual_seed(0)
    norm, linear = ActNorm(3).double(), LULinear(3).double()
    with torch.no_grad():
        for p in [*norm.parameters(), *linear.parameters()]:
            p.normal_(0.0, 0.5)
    norm.initialized.fill_(True)
    dist = FlowDistribution(standard_normal(3, F64), FlowSequence([norm, linear]))
    w = linear.weight()
    exact = MultivariateNormal(w @ norm.shift,
                               w @ torch.diag(torch.exp(2 * norm.log_scale)) @ w.T)
    x, log_q = dist.rsample_and_log_prob(50)
    torch.testing.assert_close(log_q, exact.log_prob(x))
    y = torch.randn(20, 3, dtype=F64) * 3
    torch.testing.assert_close(dist.log_prob(y), exact.log_prob(y))


def test_rotations_keep_the_standard_normal():
    torch.manual_seed(0)
    flows = stack(4, None, family=HouseholderFlow, num_layers=3, amortized=False).double()
    dist = FlowDistribution(standard_normal(4, F64), flows)
    x = torch.randn(10, 4, dtype=F64) * 2
    torch.testing.assert_close(dist.log_prob(x), standard_normal(4, F64).log_prob(x))


@pytest.mark.parametrize("name", sorted(FLOW_FAMILIES))
def test_forward_and_inverse_log_densities_agree_or_inverse_is_named_missing(name):
    dist = FlowDistribution(standard_normal(2, F64), random_global_stack(name))
    x, log_q = dist.rsample_and_log_prob(64)
    try:
        log_q_inverse = dist.log_prob(x.detach())
    except InverseNotAvailable:
        return
    torch.testing.assert_close(log_q_inverse, log_q.detach(), atol=1e-8, rtol=1e-8)


INVERTIBLE = ["householder", "iaf", "realnvp", "glow", "spline"]


@pytest.mark.parametrize("name", INVERTIBLE)
def test_density_integrates_to_the_mass_its_samples_put_in_the_box(name):
    """Riemann sum of exp(log_prob) over [-L, L]^2 vs the fraction of samples inside."""
    dist = FlowDistribution(standard_normal(2, F64), random_global_stack(name))
    half, n = 6.0, 301
    ticks = torch.linspace(-half, half, n, dtype=F64)
    grid = torch.cartesian_prod(ticks, ticks)
    with torch.no_grad():
        density = dist.log_prob(grid).exp()
    cell = (2 * half / (n - 1)) ** 2
    integral = float(density.sum() * cell)
    torch.manual_seed(1)
    samples = dist.sample(20_000)
    inside = float((samples.abs() <= half).all(-1).double().mean())
    assert inside > 0.9, "the box should hold most of the mass for the test to mean much"
    assert integral == pytest.approx(inside, abs=0.02)


def test_rsample_carries_gradients_to_the_flow_and_sample_does_not():
    dist = FlowDistribution(standard_normal(2), stack(2, None, family=FLOW_FAMILIES["realnvp"],
                                                      num_layers=2, amortized=False))
    x, log_q = dist.rsample_and_log_prob(16)
    (x.sum() + log_q.sum()).backward()
    assert all(p.grad is not None for p in dist.parameters())
    assert not dist.sample(4).requires_grad


def test_one_context_is_shared_over_all_samples():
    torch.manual_seed(0)
    flows = stack(3, 5, family=FLOW_FAMILIES["planar"], num_layers=2)
    dist = FlowDistribution(standard_normal(3), flows)
    context = torch.randn(5)
    torch.manual_seed(1)
    x, log_q = dist.rsample_and_log_prob(7, context)
    torch.manual_seed(1)
    x_full, log_q_full = dist.rsample_and_log_prob(7, context.expand(7, 5))
    torch.testing.assert_close(x, x_full)
    torch.testing.assert_close(log_q, log_q_full)
    with pytest.raises(ValueError, match=r"context must be \(H,\), \(1, H\) or \(7, H\)"):
        dist.rsample_and_log_prob(7, torch.randn(3, 5))


def test_bad_base_or_input_is_named():
    flows = stack(3, None, family=FLOW_FAMILIES["realnvp"], num_layers=1, amortized=False)
    with pytest.raises(ValueError, match="one event dimension"):
        FlowDistribution(torch.distributions.Normal(torch.zeros(3), torch.ones(3)), flows)
    with pytest.raises(ValueError, match="base has dimension 2 but the flow 3"):
        FlowDistribution(standard_normal(2), flows.layers[0])
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        FlowDistribution(standard_normal(3), flows).log_prob(torch.zeros(4, 2))
