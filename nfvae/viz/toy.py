"""The figure set of a 2-D density experiment, shared by the TensorBoard callback
and visualize.py: ``toy_figures`` returns {tag: figure}; ``toy_frames`` the
frames of the layer-by-layer animation.

Takes the flow, the target and the base log-density, not a Trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from nfvae.flows import FlowSequence
from nfvae.viz.density import (
    density_frame_figure,
    layer_strip_figure,
    samples_over_target_figure,
    shared_norm,
    target_vs_learned_figure,
)
from nfvae.viz.geometry import layer_action_figure, layer_actions
from nfvae.viz.probes import (
    DensityMap,
    density_on_grid,
    Window,
    evenly_spaced_layers,
    flow_dtype_device,
    grid_lines,
    layer_densities,
    push_lines,
)

if TYPE_CHECKING:  # the figures need only the target's interface, not the package
    from nfvae.toy.targets import Target

#: The base grid pushed forward where the flow has no inverse covers N(0, I) to
#: 4.5 standard deviations (all but ~1e-5 of its mass).
BASE_WINDOW = Window.square(-4.5, 4.5)
#: Grid lines carried through the layers, over the bulk of N(0, I).
LINES_WINDOW = Window.square(-3.0, 3.0)


@dataclass
class ToyFigureSettings:
    """Sizes of the toy figures: grid nodes per side, panels, samples."""

    grid_size: int = 100
    max_strip_panels: int = 9
    max_geometry_panels: int = 8
    num_samples: int = 2000
    num_grid_lines: int = 11
    seed: int = 0


def target_density(target: Target, n: int) -> DensityMap:
    """The target's normalised density on its box (energies divided by their grid log Z)."""
    log_z = 0.0 if target.normalized else float(target.log_normalizer)
    return density_on_grid(lambda z: target.log_prob(z) - log_z, target_window(target), n)


def target_window(target: Target) -> Window:
    return Window.square(*target.bounds)


def _flow_label(flow: FlowSequence, name: str) -> str:
    return f"{name}, K = {len(flow)}"


@torch.no_grad()
def toy_figures(flow: FlowSequence, target: Target, base_log_prob: Callable[[Tensor], Tensor],
                flow_name: str, settings: ToyFigureSettings | None = None,
                note: str = "") -> dict:
    """{tag: figure}: target vs learned, the per-layer density strip (with grid lines
    carried through the layers), samples over the target, and what each layer does."""
    s = settings or ToyFigureSettings()
    window, K = target_window(target), len(flow)
    label = _flow_label(flow, flow_name)
    suffix = f" ({note})" if note else ""
    target_map = target_density(target, s.grid_size)
    strip_ks = evenly_spaced_layers(K, s.max_strip_panels)
    maps = layer_densities(flow, base_log_prob, window, BASE_WINDOW, s.grid_size, strip_ks)
    lines = push_lines(flow, grid_lines(LINES_WINDOW, s.num_grid_lines))
    generator = torch.Generator().manual_seed(s.seed)
    z0 = torch.randn(s.num_samples, target.dim, generator=generator)
    dtype, device = flow_dtype_device(flow)
    zK = flow(z0.to(device=device, dtype=dtype))[0]
    figures = {
        "toy/target_vs_learned": target_vs_learned_figure(
            target_map, maps[-1], window, f"target {target.name}",
            f"learned $q_K$ ({label})", f"target and flow density{suffix}"),
        "toy/layer_strip": layer_strip_figure(
            maps, strip_ks, K, window,
            f"density after each layer: {label}, base N(0, I){suffix}",
            lines=[lines[k] for k in strip_ks]),
        "toy/samples_over_target": samples_over_target_figure(
            target_map, zK, window, f"flow samples over {target.name} ({label})"),
    }
    if K > 0:
        geometry_ks = evenly_spaced_layers(K - 1, s.max_geometry_panels)
        actions = layer_actions(flow, z0, window, [k + 1 for k in geometry_ks])
        figures["toy/layer_geometry"] = layer_action_figure(
            actions, window, f"what each layer does ({label})")
    return figures


def toy_frames(flow: FlowSequence, target: Target, base_log_prob: Callable[[Tensor], Tensor],
               flow_name: str, settings: ToyFigureSettings | None = None) -> Iterator:
    """One figure per layer k = 0..K (at most 4x the strip's panels), yielded one at a
    time: the density q_k with the grid lines carried through, on one colour scale."""
    s = settings or ToyFigureSettings()
    K = len(flow)
    ks = evenly_spaced_layers(K, max(2, s.max_strip_panels * 4))
    window = target_window(target)
    with torch.no_grad():
        maps = layer_densities(flow, base_log_prob, window, BASE_WINDOW, s.grid_size, ks)
        lines = push_lines(flow, grid_lines(LINES_WINDOW, s.num_grid_lines))
    norm = shared_norm(maps)
    label = _flow_label(flow, flow_name)
    for dmap, k in zip(maps, ks):  # one open figure at a time
        yield density_frame_figure(dmap, norm, window, f"{label}: after layer {k}", lines[k])
