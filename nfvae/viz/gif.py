"""Animated GIFs from image tensors (the layer-by-layer frames)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from PIL import Image
from torch import Tensor


def write_gif(frames: Sequence[Tensor], path: str | os.PathLike, frame_ms: int = 300,
              hold_last_ms: int = 1500) -> None:
    """Write (3, H, W) uint8 frames of one size as a looping GIF; the last frame stays
    ``hold_last_ms`` so the final layer's picture can be read before the loop restarts."""
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    sizes = {tuple(frame.shape) for frame in frames}
    if len(sizes) != 1:
        raise ValueError(f"GIF frames must share one size, got {sorted(sizes)}")
    images = [Image.fromarray(frame.permute(1, 2, 0).contiguous().numpy()) for frame in frames]
    durations = [frame_ms] * (len(images) - 1) + [max(frame_ms, hold_last_ms)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0,
                   optimize=False)
