"""Decoder likelihoods: normalisation over the 256 grey levels and agreement with closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from nfvae.likelihoods import Bernoulli, DiscretizedLogistic, Gaussian

LEVELS = torch.arange(256, dtype=torch.float64) / 255


def reference_probabilities(mean: float, log_scale: float, num_bins: int = 256) -> torch.Tensor:
    """Bin masses from plain CDF differences in high precision (edge bins to +/- infinity)."""
    last = num_bins - 1
    centres = torch.arange(num_bins, dtype=torch.float64) / last
    scale = math.exp(log_scale)
    upper = torch.sigmoid((centres + 0.5 / last - mean) / scale)
    lower = torch.sigmoid((centres - 0.5 / last - mean) / scale)
    upper[-1], lower[0] = 1.0, 0.0
    return upper - lower


@pytest.mark.parametrize("mean, log_scale", [
    (0.5, -2.0), (0.0, -5.0), (1.0, -1.0), (0.3, -7.0), (-0.4, 0.5), (1.7, -3.0), (0.51, 2.0),
])
def test_discretized_logistic_sums_to_one_over_256_levels(mean, log_scale):
    likelihood = DiscretizedLogistic()
    log_p = likelihood.log_prob_per_pixel(LEVELS, torch.tensor(mean, dtype=torch.float64),
                                          torch.tensor(log_scale, dtype=torch.float64))
    assert torch.isfinite(log_p).all()
    torch.testing.assert_close(torch.logsumexp(log_p, 0), torch.tensor(0.0, dtype=torch.float64),
                               atol=1e-10, rtol=0)
    expected = reference_probabilities(mean, log_scale)
    torch.testing.assert_close(log_p.exp(), expected, atol=1e-12, rtol=1e-9)


def test_discretized_logistic_sums_to_one_for_random_parameters_in_float32():
    torch.manual_seed(0)
    mean = torch.rand(50, 1) * 1.4 - 0.2
    log_scale = torch.rand(50, 1) * 7 - 6
    log_p = DiscretizedLogistic().log_prob_per_pixel(LEVELS.float(), mean, log_scale)  # (50, 256)
    total = torch.logsumexp(log_p.double(), dim=1)
    torch.testing.assert_close(total, torch.zeros(50, dtype=torch.float64), atol=2e-5, rtol=0)


def test_discretized_logistic_is_finite_far_in_the_tails_and_has_gradients():
    # Mean far from the pixel and a tiny scale: both CDFs round to 0 or 1 in float32,
    # where a plain difference of sigmoids would give log(0) = -inf.
    x = torch.tensor([0.2, 0.8, 0.0, 1.0])
    mean = torch.tensor([0.9, 0.1, 0.95, 0.05], requires_grad=True)
    log_scale = torch.full((4,), -7.0, requires_grad=True)
    log_p = DiscretizedLogistic().log_prob_per_pixel(x, mean, log_scale)
    assert torch.isfinite(log_p).all()
    log_p.sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all()


def test_discretized_logistic_log_prob_sums_pixels_and_broadcasts_samples():
    torch.manual_seed(1)
    x = torch.randint(0, 256, (3, 1, 4, 5)).float() / 255
    params = torch.randn(2, 3, 2, 1, 4, 5)  # (S, B, P, C, H, W)
    likelihood = DiscretizedLogistic()
    log_p = likelihood.log_prob(x, params, data_ndim=3)
    assert log_p.shape == (2, 3)
    per_pixel = likelihood.log_prob_per_pixel(x, params[:, :, 0], params[:, :, 1])
    torch.testing.assert_close(log_p, per_pixel.flatten(2).sum(-1))
    assert likelihood.mean(params[0]).shape == (3, 1, 4, 5)


def test_bernoulli_and_gaussian_match_torch_distributions():
    torch.manual_seed(2)
    x = torch.rand(3, 1, 2, 2)
    params = torch.randn(3, 2, 1, 2, 2)
    gaussian = Gaussian().log_prob(x, params, data_ndim=3)
    reference = torch.distributions.Normal(params[:, 0], params[:, 1].exp()).log_prob(x)
    torch.testing.assert_close(gaussian, reference.flatten(1).sum(-1))
    xb = torch.bernoulli(x)
    bernoulli = Bernoulli().log_prob(xb, params[:, :1], data_ndim=3)
    reference = torch.distributions.Bernoulli(logits=params[:, 0]).log_prob(xb)
    torch.testing.assert_close(bernoulli, reference.flatten(1).sum(-1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_softplus_matches_the_reference_over_the_whole_range(dtype):
    from nfvae.likelihoods import softplus

    x = torch.cat([torch.linspace(-200, 200, 40001), torch.tensor([-1e30, 1e30])]).to(dtype)
    x.requires_grad_(True)
    exact = x.detach().double()  # F.softplus itself returns x above 20: not a reference
    reference = exact.clamp_min(0) + torch.log1p(torch.exp(-exact.abs()))
    value = softplus(x)
    # the same rounding error as F.softplus itself in float32; exact-ish in float64
    tolerance = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(value.double(), reference, atol=tolerance, rtol=tolerance)
    value.sum().backward()
    torch.testing.assert_close(x.grad.double(), torch.sigmoid(x.detach().double()),
                               atol=tolerance, rtol=0)
