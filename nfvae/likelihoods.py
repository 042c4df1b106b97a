"""Decoder likelihoods p(x|z).

Each family reads ``num_params`` tensors per pixel from the decoder output
``params`` (..., num_params, *data_shape) and returns log p(x|z) summed over the
data dimensions, shape (...). ``x`` (B, *data_shape) broadcasts against the
leading sample dimension of ``params``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Likelihood(nn.Module):
    num_params: int = 1

    def log_prob(self, x: Tensor, params: Tensor, data_ndim: int) -> Tensor:
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        raise NotImplementedError


class Bernoulli(Likelihood):
    """Binary pixels: log p = x * logit - softplus(logit), one logit per pixel."""

    num_params = 1

    def log_prob(self, x: Tensor, params: Tensor, data_ndim: int) -> Tensor:
        logits = params.select(-data_ndim - 1, 0)
        return (x * logits - F.softplus(logits)).flatten(-data_ndim).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params[:, 0])


class Gaussian(Likelihood):
    """Continuous pixels: a diagonal Gaussian with a mean and a log-scale per pixel."""

    num_params = 2

    def __init__(self, min_log_scale: float = -7.0):
        super().__init__()
        self.min_log_scale = min_log_scale

    def log_prob(self, x: Tensor, params: Tensor, data_ndim: int) -> Tensor:
        mean = params.select(-data_ndim - 1, 0)
        log_scale = params.select(-data_ndim - 1, 1).clamp_min(self.min_log_scale)
        log_p = -0.5 * ((x - mean) * torch.exp(-log_scale)).pow(2) - log_scale
        return (log_p - 0.5 * math.log(2 * math.pi)).flatten(-data_ndim).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return params[:, 0]
