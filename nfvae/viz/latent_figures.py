"""Figures of a VAE's latent space: tensors (from ``nfvae.viz.latent``) in, figures out."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from nfvae.viz.density import draw_density, shared_norm
from nfvae.viz.figures import PCA2D, image_grid
from nfvae.viz.latent import PosteriorView
from nfvae.viz.probes import DensityMap, Window

LABEL_CMAP = "tab10"
DPI = 80


def _label_scatter(ax, points: np.ndarray, labels: np.ndarray, size: float = 4, alpha=0.8):
    return ax.scatter(points[:, 0], points[:, 1], c=labels % 10, cmap=LABEL_CMAP, vmin=-0.5,
                      vmax=9.5, s=size, alpha=alpha, linewidths=0)


def _limits(ax, window: Window) -> None:
    ax.set_xlim(*window.xlim)
    ax.set_ylim(*window.ylim)
    ax.set_aspect("equal")


def _show_image(ax, image: Tensor) -> None:
    image = image.detach().float().clamp(0, 1).cpu()
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def prior_density(window: Window, n: int,
                  log_prob: Callable[[Tensor], Tensor] | None = None) -> DensityMap:
    """The prior in two dimensions on a regular grid: N(0, I), or exp(log_prob) of a
    learned prior (``log_prob`` takes (N, 2) points in float64)."""
    x, y, points = window.grid(n)
    if log_prob is None:
        density = torch.exp(-0.5 * points.pow(2).sum(-1)) / (2 * math.pi)
    else:
        density = log_prob(points).exp().double().cpu()
    return DensityMap(x, y, density.view(n, n), regular=True)


def draw_prior_circles(ax) -> None:
    """Circles of radius 1, 2, 3 around 0: where N(0, I) holds 39%, 86% and 99% of its mass."""
    for radius in (1, 2, 3):
        ax.add_patch(plt.Circle((0, 0), radius, fill=False, color="0.4", linewidth=0.8,
                                linestyle="--"))
        ax.annotate(f"{radius}$\\sigma$", (radius * 0.71, radius * 0.71), fontsize=6,
                    color="0.3")


def posteriors_figure(views: Sequence[PosteriorView], prior_window: Window, num_layers: int):
    """One row per data point: the input; draws of q0 (blue) and qK (red) against the
    prior N(0, I) (dashed: 1, 2, 3 standard deviations) with the zoom of the next two
    panels dotted; then q0(z0|x) and qK(zK|x) as densities in that zoom, each with its
    colour bar."""
    rows = len(views)
    fig, axes = plt.subplots(rows, 4, figsize=(11.2, 2.4 * rows + 0.5), squeeze=False,
                             constrained_layout=True, gridspec_kw={"width_ratios": [0.6, 1, 1, 1]})
    for row, view in zip(axes, views):
        _show_image(row[0], view.image)
        row[0].set_title(f"x (label {view.label})", fontsize=9)
        draw_prior_circles(row[1])
        for draws, colour, name in ((view.z0, "tab:blue", "$z_0$"), (view.zK, "tab:red", "$z_K$")):
            pts = draws[:300].numpy()
            row[1].scatter(pts[:, 0], pts[:, 1], s=2, c=colour, linewidths=0, label=name)
        zoom = view.window
        row[1].add_patch(plt.Rectangle((zoom.xlim[0], zoom.ylim[0]), 2 * zoom.half_width[0],
                                       2 * zoom.half_width[1], fill=False, linestyle=":"))
        _limits(row[1], prior_window)
        row[1].set_title("draws against the prior N(0, I)", fontsize=9)
        row[1].legend(loc="upper right", fontsize=7, markerscale=3)
        # One colour bar each: a flow often concentrates q0 several-fold, and on one
        # scale q0's shape would vanish; the zoom (axes) is shared.
        for ax, dmap in ((row[2], view.q0), (row[3], view.qK)):
            mesh = draw_density(ax, dmap, shared_norm([dmap]), zoom)
            fig.colorbar(mesh, ax=ax, shrink=0.85)
        row[2].set_title("$q_0(z_0|x)$ (zoom)", fontsize=9)
        row[3].set_title(f"$q_K(z_K|x)$ after {num_layers} layers", fontsize=9)
        for ax in row[1:]:
            ax.set_xlabel("$z_1$")
            ax.set_ylabel("$z_2$")
    fig.suptitle("posteriors of fixed validation points, before and after the flow", fontsize=10)
    return fig


def aggregate_posterior_figure(zK: Tensor, labels: Tensor, window: Window, bins: int,
                               aggregate: DensityMap,
                               prior_log_prob: Callable[[Tensor], Tensor] | None = None):
    """The aggregate posterior q(zK) = E_x qK(zK|x): draws coloured by label, its
    histogram density, and the prior it should match (N(0, I), or a learned prior's
    ``prior_log_prob``), on one grid and colour scale."""
    fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.9), sharex=True, sharey=True,
                             constrained_layout=True)
    points, colours = zK.numpy(), labels.numpy()
    scatter = _label_scatter(axes[0], points, colours, size=3, alpha=0.6)
    axes[0].set_title(f"$z_K$ of {len(points)} draws, by label", fontsize=9)
    prior = prior_density(window, bins, prior_log_prob)
    norm = shared_norm([aggregate, prior])
    draw_density(axes[1], aggregate, norm, window)
    mesh = draw_density(axes[2], prior, norm, window)
    axes[1].set_title("aggregate posterior $q(z_K)$ (histogram)", fontsize=9)
    axes[2].set_title("prior $p(z)$" + (" = N(0, I)" if prior_log_prob is None else " (learned)"),
                      fontsize=9)
    for ax in axes:
        _limits(ax, window)
        ax.set_xlabel("$z_1$")
    axes[0].set_ylabel("$z_2$")
    fig.colorbar(scatter, ax=axes[0], ticks=range(10), label="label", shrink=0.8)
    fig.colorbar(mesh, ax=axes[1:].tolist(), label="density", shrink=0.8)
    fig.suptitle("aggregate posterior over the validation set", fontsize=10)
    return fig


def trajectories_figure(zs: Tensor, labels: Tensor, background: Tensor,
                        background_labels: Tensor):
    """Paths z0 -> z1 -> ... -> zK of a few points (circle: z0, star: zK) in the plane
    of the two principal components of all their z_k; zK of many points behind."""
    num_layers = zs.shape[0] - 1
    pca = PCA2D(zs.reshape(-1, zs.shape[-1]))
    paths = torch.stack([pca(z) for z in zs]).numpy()  # (K + 1, M, 2)
    fig, ax = plt.subplots(figsize=(6.4, 5.2), constrained_layout=True)
    back = pca(background).numpy()
    _label_scatter(ax, back, background_labels.numpy(), size=4, alpha=0.3)
    cmap = plt.get_cmap(LABEL_CMAP)
    for m in range(paths.shape[1]):
        colour = cmap(int(labels[m]) % 10)
        ax.plot(paths[:, m, 0], paths[:, m, 1], "-", color=colour, linewidth=1.2, alpha=0.9)
        ax.plot(paths[0, m, 0], paths[0, m, 1], "o", color=colour, markersize=5,
                markeredgecolor="black", markeredgewidth=0.5)
        ax.plot(paths[-1, m, 0], paths[-1, m, 1], "*", color=colour, markersize=10,
                markeredgecolor="black", markeredgewidth=0.5)
    if num_layers > 0:  # number the layers along the first path
        for k in sorted(set(np.linspace(0, num_layers, min(num_layers + 1, 6)).astype(int))):
            ax.annotate(f"k={k}", paths[k, 0], fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    d = zs.shape[-1]
    names = ("$z_1$", "$z_2$") if d <= 2 else ("PC 1 of $z_{0..K}$", "PC 2 of $z_{0..K}$")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(f"{paths.shape[1]} points through {num_layers} flow layers "
                 f"(o: $z_0$, *: $z_K$; faint: $z_K$ of all)", fontsize=9)
    return fig


def active_units_figure(activity_z0: Tensor, activity_zK: Tensor, kl_per_dim: Tensor,
                        threshold: float = 0.01):
    """Per latent dimension: activity Cov_x(E_q[z]) of z0 and zK against Burda et al.'s
    0.01 threshold (log scale), and KL(q0 || N(0, 1)) averaged over the points."""
    d = len(activity_z0)
    dims = np.arange(1, d + 1)
    fig, axes = plt.subplots(2, 1, figsize=(max(5.0, 0.35 * d + 2.0), 5.0), sharex=True,
                             constrained_layout=True)
    width = 0.4
    floor = 1e-6  # bars of exactly zero activity still show on the log scale
    axes[0].bar(dims - width / 2, activity_z0.clamp_min(floor).numpy(), width,
                label="$z_0$ (= mean of $q_0$)")
    axes[0].bar(dims + width / 2, activity_zK.clamp_min(floor).numpy(), width,
                label="$z_K$ (from draws)")
    axes[0].axhline(threshold, color="black", linestyle="--", linewidth=1,
                    label=f"threshold {threshold:g}")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("Cov$_x$(E$_q$[z])")
    axes[0].legend(fontsize=7, loc="best")
    n0 = int((activity_z0 > threshold).sum())
    nK = int((activity_zK > threshold).sum())
    axes[0].set_title(f"active units: {n0}/{d} of $z_0$, {nK}/{d} of $z_K$", fontsize=9)
    axes[1].bar(dims, kl_per_dim.numpy(), color="tab:green")
    axes[1].set_ylabel("KL($q_0$ || N(0,1)) [nats]")
    axes[1].set_xlabel("latent dimension")
    axes[1].set_xticks(dims)
    axes[1].set_title(f"per-dimension KL of $q_0$ (total {float(kl_per_dim.sum()):.2f} nats)",
                      fontsize=9)
    return fig


def log_det_figure(log_dets: Tensor):
    """log|det J_k| over the validation draws, one box per layer k, and the histogram of
    their sum (what the flow adds to the ELBO's entropy term)."""
    num_layers = log_dets.shape[0]
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 0.3 * num_layers + 4.5), 3.6),
                             constrained_layout=True,
                             gridspec_kw={"width_ratios": [max(2, num_layers / 4), 1.4]})
    axes[0].boxplot([row.numpy() for row in log_dets], showfliers=False)
    step = max(1, num_layers // 16)
    ticks = list(range(1, num_layers + 1, step))
    axes[0].set_xticks(ticks, [str(k) for k in ticks])
    axes[0].axhline(0, color="black", linewidth=0.6)
    axes[0].set_xlabel("layer k")
    axes[0].set_ylabel("log|det $J_k$|")
    axes[0].set_title("per-layer log-determinant (boxes: quartiles)", fontsize=9)
    total = log_dets.sum(0).numpy()
    axes[1].hist(total, bins=30, color="tab:purple")
    axes[1].set_xlabel("$\\sum_k$ log|det $J_k$|")
    axes[1].set_ylabel("draws")
    axes[1].set_title(f"sum: mean {total.mean():.2f}", fontsize=9)
    return fig


def image_rows_figure(images: Tensor, column_labels: Sequence[str],
                      row_labels: Sequence[str], title: str, min_pixels: int = 28):
    """A grid of images (R, T, C, H, W) with each column and row named; shown at one
    screen pixel per image pixel after upscaling tiny images to ``min_pixels``."""
    r, t, _, h, _ = images.shape
    upscale = max(1, math.ceil(min_pixels / h))
    grid = image_grid(images.reshape(r * t, *images.shape[2:]), nrow=t, upscale=upscale)
    height, width = grid.shape[1:]
    fig, ax = plt.subplots(figsize=(width / DPI + 1.6, height / DPI + 0.9),
                           constrained_layout=True)
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    cell_w, cell_h = (width - 2) / t, (height - 2) / r
    ax.set_xticks([2 + cell_w * (j + 0.5) for j in range(t)], list(column_labels), fontsize=7)
    ax.set_yticks([2 + cell_h * (i + 0.5) for i in range(r)], list(row_labels), fontsize=7)
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=9)
    return fig
