"""Fully connected encoder and decoder."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

#: Hidden-layer nonlinearities by config name (Burda et al. 2016 use tanh).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
}


def _activation(activation: str | type[nn.Module]) -> type[nn.Module]:
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of "
                             f"{sorted(ACTIVATIONS)}")
        return ACTIVATIONS[activation]
    return activation


def _mlp(sizes: Sequence[int], activation: str | type[nn.Module]) -> nn.Sequential:
    activation = _activation(activation)
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), activation()]
    return nn.Sequential(*layers)


def _check_hidden(hidden_dims: Sequence[int]) -> list[int]:
    hidden = [int(h) for h in hidden_dims]
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden_dims must be a non-empty list of sizes >= 1, got {hidden}")
    return hidden


class MLPEncoder(nn.Module):
    """x (B, *data_shape) -> context features (B, hidden_dims[-1])."""

    def __init__(self, data_shape: Sequence[int], hidden_dims: Sequence[int] = (300, 300),
                 activation: str | type[nn.Module] = nn.ReLU):
        super().__init__()
        hidden = _check_hidden(hidden_dims)
        self.net = _mlp([math.prod(data_shape), *hidden], activation)
        self.out_dim = hidden[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    """z (N, D) -> likelihood parameters (N, num_params, *data_shape)."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], num_params: int = 1,
                 hidden_dims: Sequence[int] = (300, 300),
                 activation: str | type[nn.Module] = nn.ReLU):
        super().__init__()
        hidden = _check_hidden(hidden_dims)
        self.data_shape = tuple(data_shape)
        self.num_params = num_params
        self.net = nn.Sequential(
            _mlp([latent_dim, *hidden], activation),
            nn.Linear(hidden[-1], num_params * math.prod(data_shape)),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], self.num_params, *self.data_shape)
