"""Squeeze (Dinh et al. 2017, "Density estimation using Real NVP", Sec. 3.6):

    (B, C, H, W) -> (B, 4C, H/2, W/2),   x[c, 2i + a, 2j + b] -> y[4c + 2a + b, i, j],

a reordering of coordinates, so log|det| = 0. Each 2x2 block of pixels becomes four
channels of one position; ``unsqueeze`` undoes it. H and W must be even: an odd size
(MNIST's 7 after two squeezes) is an error, not a silent crop or pad; pad the data
(28 -> 32) or use fewer levels.
"""

from __future__ import annotations

from torch import Tensor


def squeeze(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2)."""
    if x.dim() != 4:
        raise ValueError(f"squeeze expects images (B, C, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"squeeze needs even height and width, got {h}x{w}; pad the "
                         "images or use fewer levels")
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(y: Tensor) -> Tensor:
    """(B, 4C, H, W) -> (B, C, 2H, 2W), the inverse of ``squeeze``."""
    if y.dim() != 4 or y.shape[1] % 4:
        raise ValueError(f"unsqueeze expects (B, 4C, H, W), got shape {tuple(y.shape)}")
    b, c4, h, w = y.shape
    y = y.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(b, c4 // 4, 2 * h, 2 * w)
