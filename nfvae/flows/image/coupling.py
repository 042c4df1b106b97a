"""Affine and additive couplings on images (Dinh et al. 2017, "Real NVP"; Kingma &
Dhariwal 2018, "Glow"; additive: Dinh et al. 2015, "NICE").

A binary mask b keeps part of x and transforms the rest, given the kept part:

    x' = b x + (1 - b) (x exp(s) + t),   [s_raw, t] = NN(b x),
    s = c tanh(s_raw / c)   (the soft clamp of ``realnvp.py``: |s| < c = max_log_scale),
    log|det| = sum over the transformed entries of s;   additive: s = 0.

Masks: ``ChannelCoupling`` splits the channels into halves (``CouplingSplit``, as the
vector coupling does; ``swap`` exchanges the roles) and its NN sees only the kept half;
``CheckerboardCoupling`` keeps the pixels with (i + j + parity) even, RealNVP's
spatial mask, and its NN sees b x. NN: 3x3 conv, ReLU, 1x1 conv, ReLU, 3x3 conv whose
weights and bias start at zero (Glow), so every coupling starts as the identity.
Inverse in closed form: x = b x' + (1 - b) (x' - t) exp(-s).
Cost per layer O(B H W (C k^2 h + h^2)) for hidden channels h.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nfvae.flows.coupling import CouplingSplit, soft_clamp
from nfvae.flows.image.base import ImageFlow, per_image

COUPLINGS = ("affine", "additive")


class ConvConditioner(nn.Module):
    """Glow's coupling network: (B, n_in, H, W) -> (B, n_out, H, W), last layer zero."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int):
        super().__init__()
        if hidden_channels < 1:
            raise ValueError(f"hidden_channels must be >= 1, got {hidden_channels}")
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 1), nn.ReLU(),
            nn.Conv2d(hidden_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _Coupling(ImageFlow):
    """The transform shared by both masks: NN output -> (s, t) -> x_b exp(s) + t."""

    def __init__(self, channels: int, coupling: str, max_log_scale: float):
        super().__init__(channels)
        if coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
        if max_log_scale <= 0:
            raise ValueError(f"max_log_scale must be > 0, got {max_log_scale}")
        self.affine = coupling == "affine"
        self.max_log_scale = max_log_scale

    def _scale_shift(self, out: Tensor) -> tuple[Tensor | None, Tensor]:
        if not self.affine:
            return None, out
        s_raw, t = out.chunk(2, dim=1)
        return soft_clamp(s_raw, self.max_log_scale), t

    def _num_params(self, transformed_channels: int) -> int:
        return (2 if self.affine else 1) * transformed_channels


class ChannelCoupling(_Coupling):
    """Coupling across channel halves; see the module docstring."""

    def __init__(self, channels: int, hidden_channels: int, coupling: str = "affine",
                 max_log_scale: float = 3.0, swap: bool = False):
        super().__init__(channels, coupling, max_log_scale)
        self.split = CouplingSplit(channels, int(swap), "ChannelCoupling")
        self.net = ConvConditioner(self.split.num_kept, hidden_channels,
                                   self._num_params(self.split.num_changed))

    def _couple(self, z: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        z_a, z_b = self.split.split(z)
        s, t = self._scale_shift(self.net(z_a))
        if s is None:
            z_b = z_b - t if inverse else z_b + t
            return self.split.join(z_a, z_b), z.new_zeros(z.shape[0])
        z_b = (z_b - t) * torch.exp(-s) if inverse else z_b * torch.exp(s) + t
        log_det = per_image(s, z)
        return self.split.join(z_a, z_b), -log_det if inverse else log_det

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(z, inverse=False)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(z, inverse=True)


def checkerboard(height: int, width: int, parity: int, like: Tensor) -> Tensor:
    """(1, 1, H, W) mask, 1 where (i + j + parity) is even: the pixels kept."""
    i = torch.arange(height, device=like.device)[:, None]
    j = torch.arange(width, device=like.device)[None, :]
    return ((i + j + parity) % 2 == 0).to(like.dtype)[None, None]


class CheckerboardCoupling(_Coupling):
    """Coupling under RealNVP's checkerboard mask; see the module docstring."""

    def __init__(self, channels: int, hidden_channels: int, coupling: str = "affine",
                 max_log_scale: float = 3.0, parity: int = 0):
        super().__init__(channels, coupling, max_log_scale)
        self.parity = parity % 2
        self.net = ConvConditioner(channels, hidden_channels, self._num_params(channels))

    def _couple(self, z: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        keep = checkerboard(z.shape[2], z.shape[3], self.parity, z)
        change = 1 - keep
        s, t = self._scale_shift(self.net(z * keep))
        t = t * change
        if s is None:
            return (z - t if inverse else z + t), z.new_zeros(z.shape[0])
        s = s * change
        z_new = (z - t) * torch.exp(-s) if inverse else z * torch.exp(s) + t
        log_det = per_image(s, z)
        return z_new, -log_det if inverse else log_det

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(z, inverse=False)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(z, inverse=True)
