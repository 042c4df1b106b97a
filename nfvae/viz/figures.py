"""Pure functions: tensors in, figures or image tensors out.

Used by the TensorBoard callbacks and by scripts alike; none of them touches a
Trainer or a logger.
"""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid


def image_grid(images: Tensor, nrow: int, upscale: int = 1) -> Tensor:
    """(N, C, H, W) in [0, 1] -> (3, H', W') grid; ``upscale`` enlarges tiny images."""
    images = images.detach().float().clamp(0, 1).cpu()
    if upscale > 1:
        images = images.repeat_interleave(upscale, -1).repeat_interleave(upscale, -2)
    return make_grid(images, nrow=nrow, padding=2, pad_value=0.5)


def reconstruction_grid(x: Tensor, x_rec: Tensor, upscale: int = 1) -> Tensor:
    """Originals in the top row of each pair, their reconstructions beneath."""
    return image_grid(torch.cat([x, x_rec]), nrow=x.shape[0], upscale=upscale)


class PCA2D:
    """A 2-D linear projection fitted once, so frames of different epochs share axes."""

    def __init__(self, z: Tensor):
        z = z.detach().double().cpu()
        self.mean = z.mean(0)
        if z.shape[1] <= 2:
            self.components = torch.eye(z.shape[1], dtype=torch.float64)[:, :2]
        else:
            _, _, v = torch.linalg.svd(z - self.mean, full_matrices=False)
            self.components = v[:2].T

    def __call__(self, z: Tensor) -> Tensor:
        z = z.detach().double().cpu()
        if z.shape[1] == 1:
            return torch.cat([z, torch.zeros_like(z)], 1)
        return (z - self.mean) @ self.components


def latent_before_after_figure(z0_2d: Tensor, zK_2d: Tensor, labels: Tensor | None,
                               axis_names: tuple[str, str] = ("dim 1", "dim 2")):
    """Side-by-side scatter of z0 and zK on shared axes, coloured by label."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True,
                             constrained_layout=True)
    colours = None if labels is None else labels.cpu().numpy()
    scatter = None
    for ax, points, title in zip(axes, (z0_2d, zK_2d), ("z0 ~ q0 (before flow)",
                                                        "zK (after flow)")):
        points = points.cpu().numpy()
        scatter = ax.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab10", s=6,
                             vmin=-0.5, vmax=9.5)
        ax.set_title(title)
        ax.set_xlabel(axis_names[0])
        ax.set_ylabel(axis_names[1])
    if colours is not None and scatter is not None:
        fig.colorbar(scatter, ax=axes, ticks=range(10), label="label")
    return fig


def latent_cloud_figure(points_2d: Tensor, labels: Tensor | None, window,
                        title: str, axis_names: tuple[str, str] = ("dim 1", "dim 2")):
    """One scatter of 2-D points coloured by label in a fixed ``window`` (a frame of the
    layer-by-layer animation of the latent cloud)."""
    fig, ax = plt.subplots(figsize=(4.6, 4.0), constrained_layout=True)
    points = points_2d.cpu().numpy()
    colours = None if labels is None else labels.cpu().numpy() % 10
    scatter = ax.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab10", s=5,
                         vmin=-0.5, vmax=9.5, linewidths=0)
    ax.set_xlim(*window.xlim)
    ax.set_ylim(*window.ylim)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title, fontsize=10)
    if colours is not None:
        fig.colorbar(scatter, ax=ax, ticks=range(10), label="label")
    return fig


def figure_to_image(fig, dpi: int = 80) -> Tensor:
    """Render a matplotlib figure to a (3, H, W) uint8 tensor and close it; the size is
    the figure's size in inches times ``dpi``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    buffer.seek(0)
    array = np.asarray(Image.open(buffer).convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)
