"""Dropped modes of a 2-D density model: the mass it puts on each of the target's modes.

Each target with distinct modes names them (``Target.mode_names``) and assigns points
to them (``Target.mode_of``). A point counts towards its mode only where the target
itself puts mass: at a log-density above that of the lowest 1% of the target's own
draws. The target's mass per mode is measured the same way from its own draws, so a
model matching the target gives ratios near one. A mode with a ratio below
``mode_mass_fraction`` is dropped; above its inverse, over-represented.

Energy targets cannot be sampled directly; their draws come from the normalised
density on a fine grid over their box (a cell chosen by its mass, then a uniform point
in it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nfvae.diagnose.findings import Finding
from nfvae.diagnose.thresholds import Thresholds
from nfvae.toy.targets import SampleTarget, Target

MODE_FIGURES = ("TensorBoard IMAGES: viz/toy/target_vs_learned and "
                "viz/toy/samples_over_target")
#: Quantile of the target's own log-densities under which a point is off the target.
OFF_TARGET_QUANTILE = 0.01


def target_draws(target: Target, num: int, generator: torch.Generator,
                 grid_points: int = 400) -> Tensor:
    if isinstance(target, SampleTarget):
        return target.sample(num, generator)[0]
    low, high = target.bounds
    edges = torch.linspace(low, high, grid_points + 1, dtype=torch.float64)
    centres = 0.5 * (edges[1:] + edges[:-1])
    grid = torch.cartesian_prod(centres, centres)
    log_p = target.log_prob(grid).double()
    cells = torch.multinomial(torch.softmax(log_p, 0), num, replacement=True,
                              generator=generator)
    width = float(edges[1] - edges[0])
    jitter = (torch.rand(num, 2, generator=generator, dtype=torch.float64) - 0.5) * width
    return (grid[cells] + jitter).float()


def mode_masses(target: Target, points: Tensor, floor: float) -> Tensor:
    """Fraction of ``points`` on each mode (above the log-density ``floor``): (M,)."""
    on_target = target.log_prob(points) >= floor
    modes = target.mode_of(points)
    return torch.stack([((modes == m) & on_target).double().mean()
                        for m in range(len(target.mode_names))])


def dropped_modes(target: Target, model_samples: Tensor, thresholds: Thresholds,
                  num_target_draws: int = 20000, seed: int = 0) -> list[Finding]:
    if not target.mode_names:
        return []
    reference = target_draws(target, num_target_draws, torch.Generator().manual_seed(seed))
    reference_log_p = target.log_prob(reference)
    floor = float(torch.quantile(reference_log_p.double(), OFF_TARGET_QUANTILE))
    expected = mode_masses(target, reference, floor)
    found = mode_masses(target, model_samples.float().cpu(), floor)
    ratio = found / expected.clamp_min(1e-12)
    findings = []
    low, high = thresholds.mode_mass_fraction, 1 / thresholds.mode_mass_fraction
    for m, name in enumerate(target.mode_names):
        if low <= ratio[m] <= high:
            continue
        dropped = bool(ratio[m] < low)
        findings.append(Finding(
            check="dropped_mode" if dropped else "over_represented_mode",
            severity="problem" if dropped else "warning",
            summary=f"{target.name}: the model puts {float(found[m]):.3f} of its mass on "
                    f"the {name}, the target {float(expected[m]):.3f}",
            value=float(ratio[m]), threshold=low if dropped else high, figure=MODE_FIGURES,
            advice="a KL anneal that starts flatter (module.beta_start), more layers, or a "
                   "more expressive family (flow=spline)" if dropped else
                   "train longer; check the other modes for mass it took from them"))
    off, expected_off = 1 - float(found.sum()), 1 - float(expected.sum())
    if off > expected_off + thresholds.off_target_mass:
        findings.append(Finding(
            check="mass_off_target", severity="warning",
            summary=f"{target.name}: {off:.3f} of the model's mass lies where the target has "
                    f"(almost) none (the target itself: {expected_off:.3f})",
            value=off, threshold=expected_off + thresholds.off_target_mass, figure=MODE_FIGURES,
            advice="train longer or with more layers: the model has not yet concentrated "
                   "on the target"))
    if not any(f.check == "dropped_mode" for f in findings):
        findings.append(Finding(
            check="dropped_mode", severity="ok",
            summary=f"{target.name}: all {len(target.mode_names)} modes covered (mass ratio "
                    f"{float(ratio.min()):.2f} to {float(ratio.max()):.2f} of the target's; "
                    f"{off:.3f} of the model's mass off the target)",
            value=float(ratio.min()), threshold=low, figure=MODE_FIGURES))
    return findings
