"""What one 2-D flow layer acts around: the hyperplane of a planar layer, the
centre of a radial one, and a per-layer figure of the displacement it causes.

``layer_geometry(layer)`` dispatches on the layer's type (register more
families with ``@layer_geometry.register``); families without a registered
geometry are drawn with their displacement field only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import singledispatch
from typing import Protocol

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from nfvae.flows import FLOW_FAMILIES, Flow, ParametrizedFlow, PlanarFlow, RadialFlow
from nfvae.viz.probes import Window, flow_dtype_device, push_through_layers

PANEL_INCHES = 2.2


class LayerGeometry(Protocol):
    """What a layer acts around, as ``layer_geometry`` returns it: a one-line
    ``describe()`` for the panel title and ``draw(ax, window)`` onto the panel."""

    def describe(self) -> str: ...

    def draw(self, ax, window: Window) -> None: ...


@dataclass
class Hyperplane:
    """Planar layer z + u_hat tanh(w.z + b): it moves points along u_hat, most near w.z + b = 0."""

    w: Tensor
    b: float
    u_hat: Tensor

    def describe(self) -> str:
        return f"|w|={self.w.norm():.2f} |u|={self.u_hat.norm():.2f}"

    def draw(self, ax, window: Window) -> None:
        w = self.w.numpy()
        norm_sq = float(w @ w)
        if norm_sq < 1e-12:
            return
        direction = np.array([-w[1], w[0]]) / math.sqrt(norm_sq)
        reach = 3 * (window.half_width[0] + window.half_width[1] + abs(window.centre[0])
                     + abs(window.centre[1]))
        t = np.linspace(-reach, reach, 2)
        for level, style in ((0.0, "-"), (1.0, ":"), (-1.0, ":")):
            # Points with w.z + b = level: tanh is within 0.76 of its extremes past +-1.
            base = (level - self.b) * w / norm_sq
            line = base[None, :] + t[:, None] * direction[None, :]
            ax.plot(line[:, 0], line[:, 1], style, color="black", linewidth=1.0)
        foot = -self.b * w / norm_sq
        u = self.u_hat.numpy()
        ax.annotate("", xy=(foot[0] + u[0], foot[1] + u[1]), xytext=(foot[0], foot[1]),
                    arrowprops=dict(arrowstyle="->", color="tab:red", linewidth=1.5))


@dataclass
class Centre:
    """Radial layer z + beta h(alpha, r)(z - z_ref): contracts (beta < 0) or expands
    around z_ref."""

    z_ref: Tensor
    alpha: float
    beta: float

    def describe(self) -> str:
        return f"alpha={self.alpha:.2f} beta={self.beta:.2f}"

    def draw(self, ax, window: Window) -> None:
        x, y = self.z_ref.numpy()
        ax.plot([x], [y], marker="x", color="tab:red", markersize=8, markeredgewidth=2)
        # h = 1/(alpha + r): alpha is the radius at which the effect halves.
        ax.add_patch(plt.Circle((x, y), self.alpha, fill=False, linestyle=":", color="black"))


@singledispatch
def layer_geometry(layer: Flow) -> LayerGeometry | None:
    """The drawable geometry of a global 2-D layer, or None where none is defined."""
    return None


def _global_parameters(layer: ParametrizedFlow) -> dict[str, Tensor] | None:
    """The layer's own constrained parameters (its ``constrain``), for a global layer."""
    if layer.amortized:
        return None  # per-data-point parameters: no single geometry to draw
    return {k: v[0].detach().double().cpu()
            for k, v in layer.constrained_parameters(None, 1).items()}


@layer_geometry.register
def _(layer: PlanarFlow):
    params = _global_parameters(layer)
    if params is None:
        return None
    return Hyperplane(w=params["w"], b=float(params["b"]), u_hat=params["u_hat"])


@layer_geometry.register
def _(layer: RadialFlow):
    params = _global_parameters(layer)
    if params is None:
        return None
    return Centre(z_ref=params["z_ref"], alpha=float(params["alpha"]),
                  beta=float(params["beta"]))


def family_name(layer: Flow) -> str:
    """The registry's name of a layer's family (``FLOW_FAMILIES``), else its class name."""
    names = {family: name for name, family in FLOW_FAMILIES.items()}
    return names.get(type(layer), type(layer).__name__)


@dataclass
class LayerAction:
    """Layer k's input points, their images, and its displacement on a coarse grid."""

    k: int
    family: str
    inputs: Tensor       # (N, 2) z_{k-1}
    outputs: Tensor      # (N, 2) z_k
    grid_in: Tensor      # (G, 2)
    grid_out: Tensor     # (G, 2)
    geometry: LayerGeometry | None


@torch.no_grad()
def layer_actions(flow, z0: Tensor, window: Window, layers: Sequence[int],
                  arrows_per_side: int = 13) -> list[LayerAction]:
    """For each k in ``layers`` (1-based): what layer k does to the samples z_{k-1} that
    reach it, and to a coarse grid over ``window`` (the displacement field)."""
    dtype, device = flow_dtype_device(flow)
    points, _ = push_through_layers(flow, z0.to(device=device, dtype=dtype))
    _, _, grid = window.grid(arrows_per_side)
    grid = grid.to(device=device, dtype=dtype)
    actions = []
    for k in layers:
        layer = flow.layers[k - 1]
        actions.append(LayerAction(
            k=k, family=family_name(layer), inputs=points[k - 1].double().cpu(),
            outputs=points[k].double().cpu(), grid_in=grid.double().cpu(),
            grid_out=layer(grid, None)[0].double().cpu(), geometry=layer_geometry(layer)))
    return actions


def layer_action_figure(actions: Sequence[LayerAction], window: Window,
                        title: str, max_columns: int = 4):
    """One panel per layer: z_{k-1} (grey) -> z_k (blue), arrows of the displacement
    f_k(z) - z, and the layer's hyperplane (planar: solid w.z + b = 0, dotted
    w.z + b = +-1, red arrow u_hat) or centre (radial: cross at z_ref, circle of radius alpha)."""
    ncols = min(len(actions), max_columns)
    nrows = math.ceil(len(actions) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * PANEL_INCHES + 0.3,
                                                     nrows * PANEL_INCHES + 0.6),
                             sharex=True, sharey=True, constrained_layout=True, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(actions):
            ax.set_visible(False)
            continue
        act = actions[i]
        before, after = act.inputs.numpy(), act.outputs.numpy()
        ax.scatter(before[:, 0], before[:, 1], s=1, c="0.6", linewidths=0, label="$z_{k-1}$")
        ax.scatter(after[:, 0], after[:, 1], s=1, c="tab:blue", linewidths=0, label="$z_k$")
        shift = (act.grid_out - act.grid_in).numpy()
        start = act.grid_in.numpy()
        ax.quiver(start[:, 0], start[:, 1], shift[:, 0], shift[:, 1], angles="xy",
                  scale_units="xy", scale=1.0, width=0.006, color="0.25")
        label = act.family
        if act.geometry is not None:
            act.geometry.draw(ax, window)
            label += "\n" + act.geometry.describe()
        ax.set_title(f"layer {act.k}: {label}", fontsize=8)
        ax.set_xlim(*window.xlim)
        ax.set_ylim(*window.ylim)
        ax.set_aspect("equal")
    for ax in axes[-1, :]:
        ax.set_xlabel("$z_1$")
    for ax in axes[:, 0]:
        ax.set_ylabel("$z_2$")
    fig.suptitle(title, fontsize=10)
    return fig
