"""Figures of 2-D densities: heatmaps, the per-layer strip, samples over a target.

Pure functions: ``DensityMap``s and tensors in, a matplotlib figure out. Every
panel of one figure shares one linear colour scale (and one colour bar), so
the eye can compare layers; the scale's top is a high quantile of the
densities shown, not the maximum, so one sharp peak does not wash out the rest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import Normalize
from torch import Tensor

from nfvae.viz.probes import DensityMap, Window

CMAP = "viridis"
PANEL_INCHES = 2.0
COLORBAR_INCHES = 0.9
AXIS_LABEL_INCHES = 0.55
PANEL_TITLE_INCHES = 0.25
TITLE_INCHES = 0.55
SINGLE_PANEL_INCHES = 3.5


def grid_figsize(nrows: int, ncols: int, colorbar: bool = True,
                 panel: float = PANEL_INCHES) -> tuple[float, float]:
    """Inches of a figure of square panels, with room for the panel titles, the axis
    labels and the colour bar (so equal-aspect panels leave no empty band)."""
    return (ncols * panel + AXIS_LABEL_INCHES + (COLORBAR_INCHES if colorbar else 0.0),
            nrows * (panel + PANEL_TITLE_INCHES) + TITLE_INCHES + 0.25)


def shared_norm(maps: Sequence[DensityMap], quantile: float = 0.995) -> Normalize:
    """One colour scale for all maps: 0 to the largest ``quantile`` of their densities."""
    shown = [m.density if m.cell_density is None else m.cell_density for m in maps]
    tops = [torch.quantile(v[torch.isfinite(v)].float().flatten()[:2**20], quantile).item()
            for v in shown]
    top = max([t for t in tops if math.isfinite(t)] + [1e-12])
    return Normalize(vmin=0.0, vmax=top)


def draw_density(ax, dmap: DensityMap, norm: Normalize, window: Window,
                 cmap: str = CMAP):
    """One heatmap on ``ax``; outside a pushed mesh the background is the colour of zero."""
    colormap = plt.get_cmap(cmap)
    ax.set_facecolor(colormap(0.0))
    if dmap.cell_density is not None:  # a pushed mesh: one value per deformed cell
        values, shading = dmap.cell_density, "flat"
    else:                              # a regular grid: smooth between the nodes
        values, shading = dmap.density, "gouraud"
    values = np.nan_to_num(values.numpy(), nan=0.0, posinf=norm.vmax)
    mesh = ax.pcolormesh(dmap.x.numpy(), dmap.y.numpy(), values, shading=shading,
                         cmap=colormap, norm=norm, rasterized=True)
    ax.set_xlim(*window.xlim)
    ax.set_ylim(*window.ylim)
    ax.set_aspect("equal")
    return mesh


def _label_axes(axes: np.ndarray, xlabel: str = "$z_1$", ylabel: str = "$z_2$") -> None:
    for ax in axes[-1, :]:
        ax.set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)


def _subplots(nrows: int, ncols: int, colorbar: bool = True, panel: float = PANEL_INCHES):
    fig, axes = plt.subplots(nrows, ncols, figsize=grid_figsize(nrows, ncols, colorbar, panel),
                             sharex=True, sharey=True, constrained_layout=True, squeeze=False)
    return fig, axes


def _draw_lines(ax, lines: Tensor | None) -> None:
    if lines is None:
        return
    for line in lines.numpy():
        ax.plot(line[:, 0], line[:, 1], color="white", linewidth=0.4, alpha=0.55)


def layer_strip_figure(maps: Sequence[DensityMap], layers: Sequence[int], num_layers: int,
                       window: Window, title: str,
                       lines: Sequence[Tensor] | None = None, max_columns: int = 9):
    """The density q_k after layer k for each k in ``layers`` (k = 0 is the base).

    ``lines`` (optional, one (L, P, 2) tensor per map): grid lines carried
    through the same layers, drawn over each panel.
    """
    if len(maps) != len(layers):
        raise ValueError(f"{len(maps)} density maps for {len(layers)} layer numbers")
    ncols = min(len(maps), max_columns)
    nrows = math.ceil(len(maps) / ncols)
    fig, axes = _subplots(nrows, ncols)
    norm = shared_norm(maps)
    mesh = None
    for i, ax in enumerate(axes.flat):
        if i >= len(maps):
            ax.set_visible(False)
            continue
        mesh = draw_density(ax, maps[i], norm, window)
        _draw_lines(ax, None if lines is None else lines[i])
        k = layers[i]
        suffix = " (base)" if k == 0 else (" (output)" if k == num_layers else "")
        ax.set_title(f"k = {k}{suffix}", fontsize=9)
    _label_axes(axes)
    fig.colorbar(mesh, ax=axes, label="density $q_k(z)$", shrink=0.9)
    fig.suptitle(title, fontsize=10)
    return fig


def target_vs_learned_figure(target: DensityMap, learned: DensityMap,
                             window: Window, target_title: str,
                             learned_title: str, title: str):
    """The target and the learned density side by side on one grid and one colour scale."""
    fig, axes = _subplots(1, 2)
    norm = shared_norm([target])
    draw_density(axes[0, 0], target, norm, window)
    mesh = draw_density(axes[0, 1], learned, norm, window)
    axes[0, 0].set_title(target_title, fontsize=9)
    axes[0, 1].set_title(learned_title, fontsize=9)
    _label_axes(axes)
    fig.colorbar(mesh, ax=axes, label="density", shrink=0.9)
    fig.suptitle(title, fontsize=10)
    return fig


def samples_over_target_figure(target: DensityMap, samples: Tensor,
                               window: Window, title: str):
    """Flow samples (red points) scattered over the target density (grey)."""
    fig, axes = _subplots(1, 1, colorbar=False, panel=SINGLE_PANEL_INCHES)
    ax = axes[0, 0]
    draw_density(ax, target, shared_norm([target]), window, cmap="Greys")
    samples = samples.detach().double().cpu()
    inside = window.contains(samples).double()
    points = samples.numpy()
    ax.scatter(points[:, 0], points[:, 1], s=2, c="tab:red", alpha=0.5, linewidths=0)
    ax.set_title(f"{len(points)} samples, {inside.mean():.1%} in view", fontsize=9)
    _label_axes(axes)
    fig.suptitle(title, fontsize=10)
    return fig


def density_frame_figure(dmap: DensityMap, norm: Normalize, window: Window,
                         title: str, lines: Tensor | None = None):
    """One frame of the layer-by-layer animation: a density with its carried grid lines."""
    fig, axes = _subplots(1, 1, panel=SINGLE_PANEL_INCHES)
    mesh = draw_density(axes[0, 0], dmap, norm, window)
    _draw_lines(axes[0, 0], lines)
    axes[0, 0].set_title(title, fontsize=9)
    _label_axes(axes)
    fig.colorbar(mesh, ax=axes, label="density", shrink=0.9)
    return fig
