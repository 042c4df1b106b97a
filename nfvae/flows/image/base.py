"""What every image flow layer shares: images (B, C, H, W) instead of vectors (B, D).

The layers are ``Flow``s with the project's direction: ``forward`` is the sampling
direction (latent -> image), ``inverse`` the data direction (image -> latent), the
one density evaluation and training run. A layer list written in the data
direction, as the papers draw it (Glow: ActNorm -> 1x1 conv -> coupling), becomes a
``FlowSequence`` through ``data_order``, whose ``inverse`` runs it in that order.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from nfvae.flows.base import Flow, FlowSequence


def check_image(x: Tensor, channels: int, owner: str) -> None:
    """Fail early, naming the expected shape, for x that is not (B, channels, H, W)."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{owner} expects images of shape (B, {channels}, H, W), "
                         f"got {tuple(x.shape)}")


class ImageFlow(Flow):
    """A flow over images (B, C, H, W) with ``channels`` = C; log_det is (B,)."""

    has_inverse = True

    def __init__(self, channels: int):
        super().__init__()
        if channels < 1:
            raise ValueError(f"{type(self).__name__}: channels must be >= 1, got {channels}")
        self.channels = channels
        self.dim = channels

    def check_z(self, z: Tensor) -> None:
        check_image(z, self.channels, type(self).__name__)


def data_order(layers: Sequence[Flow]) -> FlowSequence:
    """Layers listed in the data direction -> a FlowSequence (listed in the sampling
    direction), so that its ``inverse`` applies ``layers[0]`` first."""
    return FlowSequence(list(reversed(layers)))


def per_image(log_det: Tensor, x: Tensor) -> Tensor:
    """Sum an elementwise log-det (B, C, H, W) to one number per image (B,)."""
    return log_det.reshape(x.shape[0], -1).sum(1)
