"""The figure sets of a FlowVAE, shared by the TensorBoard callbacks and visualize.py.

``vae_sample_images`` gives what ``VAEImageLogger`` has always logged
(reconstructions, prior samples, z0/zK by label, the summed log-det);
``vae_latent_figures`` the latent-space figures, scalars and histograms;
``vae_frames`` the frames of the layer-by-layer animation. Each returns plain
tensors and figures, keyed by their TensorBoard tag.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from nfvae.distributions import StandardNormal
from nfvae.model import FlowVAE
from nfvae.viz.figures import (
    PCA2D,
    image_grid,
    latent_before_after_figure,
    latent_cloud_figure,
    reconstruction_grid,
)
from nfvae.viz.latent import (
    activity,
    activity_from_draws,
    decode_mean,
    histogram_density,
    interpolation_latents,
    kl_q0_per_dimension,
    latent_snapshot,
    pick_examples,
    posterior_mean_zK,
    posterior_views,
    traversal_latents,
)
from nfvae.viz.latent_figures import (
    active_units_figure,
    aggregate_posterior_figure,
    image_rows_figure,
    log_det_figure,
    posteriors_figure,
    trajectories_figure,
)
from nfvae.viz.probes import Window


@dataclass
class FigureSet:
    """What one drawing produces, by TensorBoard tag: matplotlib figures, image tensors
    (3, H, W), scalars and histogram values."""

    figures: dict = field(default_factory=dict)
    images: dict[str, Tensor] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class LatentFigureSettings:
    """Sizes of the latent-space figures."""

    # Posterior draws per point for E_q[zK|x] (activity), the aggregate posterior and the
    # log-det histograms. The activity estimate's noise is ~ Var_q / S * sqrt(2 / N):
    # with S = 64 and N = 500 points, ~0.001, a tenth of Burda et al.'s threshold.
    num_samples: int = 64
    max_scatter_points: int = 4000  # drawn points of the aggregate posterior's scatter
    num_posteriors: int = 4        # latent size 2: points whose q0 and qK are drawn
    grid_size: int = 64            # grid nodes per side of the density maps
    posterior_draws: int = 2000    # draws that fix each posterior's zoom
    num_trajectories: int = 12
    num_pairs: int = 4             # interpolations
    num_steps: int = 8             # interpolation and traversal steps
    num_directions: int = 3        # traversals: top principal directions of E[zK|x]
    traversal_span: float = 3.0    # standard deviations each way
    activity_threshold: float = 0.01  # Burda et al. (2016)
    seed: int = 0


@torch.no_grad()
def vae_sample_images(model: FlowVAE, x: Tensor, labels: Tensor, num_reconstructions: int,
                      upscale: int, prior_noise: Tensor, pca: PCA2D | None = None
                      ) -> tuple[FigureSet, PCA2D]:
    """Reconstructions, 5x5 prior samples from the prior's base noise ``prior_noise`` (25, D),
    z0/zK of x by label (the two latent dimensions when D = 2, else the PCA ``pca``, fitted
    here if None), and the summed log-det of each point. Returns the set and the PCA, to reuse next time."""
    device = model.to_mu.weight.device
    x = x.to(device)
    terms = model(x)
    likelihood = model.likelihood
    n = num_reconstructions
    out = FigureSet()
    recon = likelihood.mean(terms.decoder_params[0, :n])
    out.images["images/reconstructions"] = reconstruction_grid(x[:n], recon, upscale)
    samples = model.sample(len(prior_noise), noise=prior_noise)  # through a flow prior too
    out.images["images/samples"] = image_grid(samples, 5, upscale)
    z0, zK = terms.z0[0], terms.zK[0]
    pca = pca or PCA2D(z0)
    axes = ("z_1", "z_2") if model.latent_dim <= 2 else ("PC 1 of z0", "PC 2 of z0")
    out.figures["images/latent_before_after_flow"] = latent_before_after_figure(
        pca(z0), pca(zK), labels, axes)
    out.histograms["latent/sum_log_det"] = terms.sum_log_det[0].float().cpu()
    return out, pca


def _learned_prior_log_prob(model: FlowVAE):
    """The prior's log-density on float64 grid points, or None for N(0, I) itself."""
    if isinstance(model.prior, StandardNormal):
        return None
    anchor = model.to_mu.weight
    return lambda points: model.prior.log_prob(points.to(anchor))


def _prior_window(points: Tensor, at_least: float = 3.5) -> Window:
    """A square centred at 0 holding the prior's bulk and 99.5% of the points."""
    reach = float(torch.quantile(points.abs().double().flatten(), 0.995)) * 1.1
    half = max(at_least, reach)
    return Window.square(-half, half)


@torch.no_grad()
def vae_latent_figures(model: FlowVAE, x: Tensor, labels: Tensor,
                       settings: LatentFigureSettings | None = None) -> FigureSet:
    """The latent space of a FlowVAE, seen on the points x (N, *data_shape)."""
    s = settings or LatentFigureSettings()
    generator = torch.Generator().manual_seed(s.seed)
    labels = labels.cpu()
    snap = latent_snapshot(model, x, labels, s.num_samples, generator)
    out = FigureSet()
    K, D = snap.num_layers, snap.latent_dim

    activity_z0, activity_zK = activity(snap.mu), activity_from_draws(snap.zs[-1])
    kl = kl_q0_per_dimension(snap.mu, snap.log_sigma)
    out.figures["latent/active_units"] = active_units_figure(
        activity_z0.float(), activity_zK.float(), kl.float(), s.activity_threshold)
    out.scalars["latent/active_units_z0"] = float((activity_z0 > s.activity_threshold).sum())
    out.scalars["latent/active_units_zK"] = float((activity_zK > s.activity_threshold).sum())
    out.scalars["latent/kl_q0"] = float(kl.sum())

    chosen = pick_examples(labels, s.num_trajectories)
    out.figures["latent/trajectories"] = trajectories_figure(
        snap.zs[:, 0, chosen], labels[chosen], snap.zs[-1, 0], labels)
    if K > 0:
        out.figures["latent/log_det_per_layer"] = log_det_figure(snap.log_dets.flatten(1))
        for k in range(K):
            out.histograms[f"latent/log_det/layer_{k + 1:02d}"] = snap.log_dets[k].flatten()

    if D == 2:
        shown = pick_examples(labels, s.num_posteriors)
        views = posterior_views(model, x[shown], labels[shown], s.grid_size, s.posterior_draws,
                                generator)
        zK_all = snap.zs[-1].reshape(-1, 2)
        window = _prior_window(zK_all)
        out.figures["latent/posteriors"] = posteriors_figure(views, window, K)
        per_point = max(1, s.max_scatter_points // len(labels))
        shown_draws = snap.zs[-1, :per_point].reshape(-1, 2)
        out.figures["latent/aggregate_posterior"] = aggregate_posterior_figure(
            shown_draws, labels.repeat(min(per_point, s.num_samples)), window, s.grid_size,
            histogram_density(zK_all, window, s.grid_size), _learned_prior_log_prob(model))

    pairs = pick_examples(labels, 2 * s.num_pairs)
    a, b = pairs[0::2], pairs[1::2]
    a = a[: len(b)]
    if len(a) > 0:
        path = interpolation_latents(posterior_mean_zK(model, x[a]),
                                     posterior_mean_zK(model, x[b]), s.num_steps)
        decoded = decode_mean(model, path)
        images = torch.cat([x[a].float().cpu().unsqueeze(1), decoded,
                            x[b].float().cpu().unsqueeze(1)], 1)
        steps = [f"t={t:.2g}" for t in torch.linspace(0, 1, s.num_steps).tolist()]
        out.figures["latent/interpolations"] = image_rows_figure(
            images, ["$x_a$", *steps, "$x_b$"],
            [f"{int(labels[i])} to {int(labels[j])}" for i, j in zip(a, b)],
            "decoded $(1-t) z_K(x_a) + t z_K(x_b)$, $z_K$ = flow of the posterior mean")

    traversal = traversal_latents(posterior_mean_zK(model, x), s.num_directions, s.num_steps,
                                  s.traversal_span)
    out.figures["latent/traversals"] = image_rows_figure(
        decode_mean(model, traversal.latents), [f"{c:+.1f}$\\sigma$" for c in traversal.offsets],
        [f"PC {r + 1} ({e:.0%})" for r, e in enumerate(traversal.explained.tolist())],
        "decoded along the principal axes of $z_K$ = flow(posterior mean)")
    return out


def vae_frames(model: FlowVAE, x: Tensor, labels: Tensor, seed: int = 0,
               max_frames: int = 40) -> Iterator:
    """One figure per layer k: z_k of every point (one posterior draw each) by label, in
    one fixed plane (the latent plane when D = 2, else the PCA of all z_k) and window;
    yielded one at a time."""
    snap = latent_snapshot(model, x, labels, 1, torch.Generator().manual_seed(seed))
    zs = snap.zs[:, 0]                                          # (K + 1, N, D)
    pca = PCA2D(zs.reshape(-1, zs.shape[-1]))
    planes = torch.stack([pca(z) for z in zs]).float()          # (K + 1, N, 2)
    window = Window.around(planes.reshape(-1, 2), quantile=0.002)
    K = snap.num_layers
    ks = sorted(set(torch.linspace(0, K, min(K + 1, max_frames)).round().long().tolist()))
    names = ("$z_1$", "$z_2$") if zs.shape[-1] <= 2 else ("PC 1", "PC 2")
    for k in ks:
        yield latent_cloud_figure(planes[k], labels.cpu(), window,
                                  f"$z_{{{k}}}$: after layer {k} of {K}", names)
