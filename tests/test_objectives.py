"""Objectives against closed forms: analytic KL, exact linear-Gaussian marginals."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from nfvae.flows import PlanarFlow, stack
from nfvae.likelihoods import Bernoulli, Gaussian
from nfvae.model import FlowVAE
from nfvae.nets import MLPDecoder, MLPEncoder
from nfvae.objectives import (
    importance_log_likelihood,
    iwae_bound,
    kl_warmup_beta,
    log_importance_weights,
    negative_elbo,
)

X_DIM, Z_DIM, SIGMA = 6, 3, 0.5


class IdentityEncoder(nn.Module):
    def __init__(self, data_shape):
        super().__init__()
        self.out_dim = math.prod(data_shape)

    def forward(self, x):
        return x.flatten(1)


class LinearGaussianDecoder(nn.Module):
    """p(x|z) = N(W z + b, SIGMA^2 I): the decoder outputs (mean, log-scale)."""

    def __init__(self, latent_dim, data_shape, num_params, weight, bias):
        super().__init__()
        assert num_params == 2
        self.weight, self.bias = weight, bias

    def forward(self, z):
        mean = z @ self.weight.T + self.bias
        return torch.stack([mean, torch.full_like(mean, math.log(SIGMA))], dim=1)


def linear_gaussian(flow_layers: int = 0, seed: int = 0):
    """A model with a known marginal p(x) = N(b, W W^T + SIGMA^2 I) and its exact posterior."""
    torch.manual_seed(seed)
    # Orthogonal columns make W^T W diagonal, so the exact posterior is a diagonal Gaussian.
    q, _ = torch.linalg.qr(torch.randn(X_DIM, Z_DIM, dtype=torch.float64))
    weight = q * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    bias = torch.randn(X_DIM, dtype=torch.float64)
    model = FlowVAE(
        data_shape=(X_DIM,), latent_dim=Z_DIM, encoder=IdentityEncoder,
        decoder=partial(LinearGaussianDecoder, weight=weight, bias=bias),
        flow=partial(stack, family=PlanarFlow, num_layers=flow_layers),
        likelihood=Gaussian(),
    ).double()
    post_var = 1.0 / (1.0 + (weight * weight).sum(0) / SIGMA**2)  # diag of (I + W^T W / s^2)^-1
    with torch.no_grad():
        model.to_mu.weight.copy_(post_var[:, None] * weight.T / SIGMA**2)
        model.to_mu.bias.copy_(-(post_var[:, None] * weight.T / SIGMA**2) @ bias)
        model.to_log_sigma.weight.zero_()
        model.to_log_sigma.bias.copy_(0.5 * post_var.log())
    marginal = torch.distributions.MultivariateNormal(
        bias, weight @ weight.T + SIGMA**2 * torch.eye(X_DIM, dtype=torch.float64))
    return model, marginal


def test_exact_posterior_gives_exact_log_likelihood_with_one_sample():
    model, marginal = linear_gaussian()
    x = marginal.sample((16,))
    torch.testing.assert_close(importance_log_likelihood(model, x, 1), marginal.log_prob(x))
    # and every importance weight equals p(x): the ELBO is tight
    log_w = log_importance_weights(model, x, 7, max_batch_samples=20)
    torch.testing.assert_close(log_w, marginal.log_prob(x).expand(7, -1))


@pytest.mark.parametrize("flow_layers", [0, 3])
def test_importance_sampling_converges_to_marginal_with_imperfect_posterior(flow_layers):
    model, marginal = linear_gaussian(flow_layers)
    torch.manual_seed(0)
    with torch.no_grad():  # move q away from the true posterior
        model.to_mu.bias.add_(0.1)
        model.to_log_sigma.bias.add_(0.3)
        for layer in model.flow.layers:  # a mild planar bend, the same for every x
            layer.params.head.weight.zero_()
            layer.params.head.bias.normal_(0, 0.3)
    x = marginal.sample((8,))
    estimate = importance_log_likelihood(model, x, 20_000)
    # A wrong sign of the log-det in log qK would be off by more than a nat here.
    torch.testing.assert_close(estimate, marginal.log_prob(x), atol=0.05, rtol=0)


def test_more_samples_give_a_tighter_bound_on_average():
    model, marginal = linear_gaussian()
    with torch.no_grad():
        model.to_mu.bias.add_(0.8)
    x = marginal.sample((64,))
    torch.manual_seed(2)
    bounds = [importance_log_likelihood(model, x, s).mean() for s in (1, 10, 100, 1000)]
    assert all(b_small <= b_large for b_small, b_large in zip(bounds, bounds[1:]))
    assert bounds[-1] <= marginal.log_prob(x).mean() + 0.01


def test_monte_carlo_kl_matches_analytic_gaussian_kl_without_flow():
    torch.manual_seed(0)
    model = FlowVAE(
        data_shape=(1, 4, 4), latent_dim=5,
        encoder=partial(MLPEncoder, hidden_dims=[16]),
        decoder=partial(MLPDecoder, hidden_dims=[16]),
        flow=partial(stack, family=None, num_layers=0), likelihood=Bernoulli(),
    ).double()
    x = torch.bernoulli(torch.full((4, 1, 4, 4), 0.5, dtype=torch.float64))
    with torch.no_grad():
        terms = model(x, num_samples=40_000)
    mu, log_sigma = terms.mu, terms.log_sigma
    analytic = 0.5 * (mu.pow(2) + (2 * log_sigma).exp() - 1 - 2 * log_sigma).sum(-1)
    mc = terms.kl.mean(0)
    standard_error = terms.kl.std(0) / math.sqrt(terms.kl.shape[0])
    assert ((mc - analytic).abs() < 5 * standard_error).all()
    assert torch.equal(terms.sum_log_det, torch.zeros_like(terms.sum_log_det))


def test_negative_elbo_parts_and_beta_weighting():
    model, marginal = linear_gaussian(flow_layers=2)
    x = marginal.sample((5,))
    terms = model(x, num_samples=3)
    parts = negative_elbo(terms, beta=0.25)
    torch.testing.assert_close(parts.neg_elbo, parts.recon + parts.kl)
    torch.testing.assert_close(parts.loss, parts.recon + 0.25 * parts.kl)
    expected = (terms.log_q0 - terms.sum_log_det - terms.log_px - terms.log_pz).mean()
    torch.testing.assert_close(parts.neg_elbo, expected)
    torch.testing.assert_close(-terms.log_weight.mean(), expected)
    assert parts.nonfinite_terms() == []


def test_kl_warmup_is_linear_then_one():
    assert kl_warmup_beta(0.2, 10, 0) == pytest.approx(0.2)
    assert kl_warmup_beta(0.2, 10, 5) == pytest.approx(0.6)
    assert kl_warmup_beta(0.2, 10, 10) == 1.0
    assert kl_warmup_beta(0.2, 10, 25) == 1.0
    assert kl_warmup_beta(0.0, 0, 0) == 1.0


def test_iwae_bound_is_log_mean_exp():
    log_w = torch.log(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    torch.testing.assert_close(iwae_bound(log_w), torch.log(torch.tensor([2.0, 4.0])))
