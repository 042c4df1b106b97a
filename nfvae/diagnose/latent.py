"""Checks of a flow-VAE's latent space: posterior collapse, idle flow layers, and
whether the flow as a whole buys anything.

* Collapse: a unit u is active when A_u = Cov_x(E_q[u|x]) > 0.01 (Burda et al. 2016,
  Sec. 5.2), estimated from posterior draws with their Monte-Carlo noise removed
  (``nfvae.viz.latent.activity_from_draws``, as the latent callback does), for z0
  and zK; beside it the KL of q0 from the prior per dimension.
* Idle layers: layer k is effectively the identity when the spread of its log-det
  over the data and its mean displacement |z_k - z_{k-1}| / sqrt(D), in units of the
  posterior's mean standard deviation, both stay below their thresholds.
* The flow's contribution: the -ELBO with the flow against the -ELBO with the flow
  removed (zK = z0), on the same weights and the same noise per example.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from nfvae.diagnose.findings import Finding
from nfvae.diagnose.thresholds import Thresholds
from nfvae.evaluation import ExampleNoise
from nfvae.flows import FlowSequence
from nfvae.model import FlowVAE
from nfvae.viz.latent import LatentSnapshot, activity_from_draws, kl_q0_per_dimension

LATENT_FIGURES = ("TensorBoard IMAGES: viz/latent/active_units and "
                  "viz/images/latent_before_after_flow")
LAYER_FIGURES = ("TensorBoard HISTOGRAMS: viz/latent/log_det/layer_<k>; IMAGES: "
                 "viz/latent/log_det_per_layer; visualize.py's layers.gif")


@dataclass
class LatentStatistics:
    """active_z0, active_zK, kl_per_dim: (D,); per layer k = 1..K: log_det_std,
    log_det_mean, displacement (relative to the posterior scale): (K,)."""

    active_z0: Tensor
    active_zK: Tensor
    kl_per_dim: Tensor
    log_det_std: Tensor
    log_det_mean: Tensor
    displacement: Tensor
    posterior_scale: float


def latent_statistics(snapshot: LatentSnapshot) -> LatentStatistics:
    zs = snapshot.zs.double()
    dim = snapshot.latent_dim
    scale = float(snapshot.log_sigma.double().exp().mean())
    steps = (zs[1:] - zs[:-1]).norm(dim=-1) / math.sqrt(dim)  # (K, S, N)
    # (K, S*N): with no flow (K = 0) every per-layer figure is simply empty.
    log_dets = snapshot.log_dets.double().flatten(1)
    return LatentStatistics(
        active_z0=activity_from_draws(zs[0]),
        active_zK=activity_from_draws(zs[-1]),
        kl_per_dim=kl_q0_per_dimension(snapshot.mu, snapshot.log_sigma),
        log_det_std=log_dets.std(1),
        log_det_mean=log_dets.mean(1),
        displacement=steps.flatten(1).mean(1) / scale,
        posterior_scale=scale,
    )


def posterior_collapse(stats: LatentStatistics, thresholds: Thresholds) -> list[Finding]:
    dim = len(stats.active_z0)
    active = int((stats.active_zK > thresholds.active_unit).sum())
    active_z0 = int((stats.active_z0 > thresholds.active_unit).sum())
    fraction = active / dim
    low_kl = int((stats.kl_per_dim < 0.01).sum())
    summary = (f"{active} of {dim} latent dimensions carry information in zK ({active_z0} in "
               f"z0); {low_kl} dimension(s) of q0 have KL < 0.01 nats from the prior")
    if active == 0:
        severity = "problem"
    elif fraction < thresholds.min_active_fraction:
        severity = "warning"
    else:
        severity = "ok"
    return [Finding(
        check="posterior_collapse", severity=severity, summary=summary, value=fraction,
        threshold=thresholds.min_active_fraction, figure=LATENT_FIGURES,
        advice="a longer KL warm-up (objective.warmup_epochs), a smaller latent size, a "
               "weaker decoder, or more importance samples (objective.num_samples)")]


def idle_layers(stats: LatentStatistics, thresholds: Thresholds) -> list[Finding]:
    findings = []
    num_layers = len(stats.log_det_std)
    idle = [k for k in range(num_layers)
            if stats.log_det_std[k] < thresholds.idle_log_det_std
            and stats.displacement[k] < thresholds.idle_displacement]
    for k in idle:
        findings.append(Finding(
            check="idle_layer", severity="warning",
            summary=(f"flow layer {k + 1} of {num_layers} is effectively the identity: "
                     f"log-det spread {float(stats.log_det_std[k]):.2g} (mean "
                     f"{float(stats.log_det_mean[k]):.2g}), displacement "
                     f"{float(stats.displacement[k]):.2g} posterior standard deviations"),
            value=float(stats.displacement[k]), threshold=thresholds.idle_displacement,
            figure=LAYER_FIGURES.replace("<k>", f"{k + 1:02d}"),
            advice="fewer layers (flow.num_layers), a higher learning rate for the flow, or "
                   "a family whose layers cannot vanish (flow=sylvester_orthogonal)"))
    if num_layers and not idle:
        findings.append(Finding(
            check="idle_layer", severity="ok",
            summary=f"all {num_layers} flow layers move the posterior (smallest displacement "
                    f"{float(stats.displacement.min()):.2g} posterior standard deviations)",
            value=float(stats.displacement.min()), threshold=thresholds.idle_displacement,
            figure=LAYER_FIGURES.replace("<k>", "01")))
    return findings


@contextmanager
def flow_removed(model: FlowVAE):
    """The same model with zK = z0 (an empty flow) for the duration of the block."""
    flow = model.flow
    model.flow = FlowSequence([])
    try:
        yield model
    finally:
        model.flow = flow


@torch.no_grad()
def neg_elbo_with_and_without_flow(model: FlowVAE, x: Tensor, num_samples: int = 8,
                                   seed: int = 0) -> tuple[float, float]:
    """Mean -ELBO per example with the flow and with it removed, from the same noise."""
    eps = ExampleNoise(torch.arange(len(x)), model.latent_dim, seed, block=num_samples,
                       device=x.device)(0, num_samples)
    with_flow = -model(x, eps=eps).log_weight.mean()
    with flow_removed(model):
        without = -model(x, eps=eps).log_weight.mean()
    return float(with_flow), float(without)


def flow_contribution(neg_elbo_with: float, neg_elbo_without: float, num_layers: int,
                      thresholds: Thresholds) -> list[Finding]:
    if num_layers == 0:
        return []
    gain = neg_elbo_without - neg_elbo_with
    contributes = gain >= thresholds.flow_gain_nats
    return [Finding(
        check="flow_contribution", severity="ok" if contributes else "warning",
        summary=(f"removing the flow ({num_layers} layers) changes -ELBO from "
                 f"{neg_elbo_with:.3f} to {neg_elbo_without:.3f} nats: the flow "
                 + ("buys" if contributes else "buys only") + f" {gain:.3f} nats"),
        value=gain, threshold=thresholds.flow_gain_nats, figure=LATENT_FIGURES,
        advice="train longer, or drop the flow: it costs compute without tightening the bound")]
