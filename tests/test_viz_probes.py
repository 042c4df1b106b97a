"""The numbers behind the figures: densities through flows, latent statistics, layer
geometry, against independent references (quadrature, round trips, closed forms)."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from nfvae.flows import FLOW_FAMILIES, ParametrizedFlow, PlanarFlow, RadialFlow, stack
from nfvae.model import standard_normal_log_prob
from nfvae.viz.geometry import layer_geometry
from nfvae.viz.latent import (
    activity,
    activity_from_draws,
    histogram_density,
    kl_q0_per_dimension,
    pick_examples,
    traversal_latents,
)
from nfvae.viz.probes import (
    Window,
    evenly_spaced_layers,
    grid_lines,
    layer_densities,
    layer_densities_inverse,
    layer_densities_pushforward,
    push_lines,
)

INVERTIBLE = [name for name in sorted(FLOW_FAMILIES)
              if stack(2, None, partial(FLOW_FAMILIES[name]), 1, amortized=False).has_inverse]
NOT_INVERTIBLE = [name for name in sorted(FLOW_FAMILIES) if name not in INVERTIBLE]


def global_flow(name: str, num_layers: int = 3, seed: int = 0):
    """A float64 global 2-D flow with random, moderate parameters: raw parameters of
    the parametrized families moved by 0.6 randn, networks' weights by 0.05 randn
    (more folds a coupling network's map too sharply for a 400^2 mesh to resolve)."""
    torch.manual_seed(seed)
    flow = stack(2, None, partial(FLOW_FAMILIES[name]), num_layers, amortized=False).double()
    scale = 0.6 if issubclass(FLOW_FAMILIES[name], ParametrizedFlow) else 0.05
    with torch.no_grad():
        flow(torch.randn(64, 2, dtype=torch.float64))  # data-dependent starts (ActNorm)
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return flow


def quad_areas(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Areas of the (n-1)^2 quadrilaterals of a mesh of nodes x, y (n, n), by the shoelace rule."""
    corners = [(x[:-1, :-1], y[:-1, :-1]), (x[:-1, 1:], y[:-1, 1:]),
               (x[1:, 1:], y[1:, 1:]), (x[1:, :-1], y[1:, :-1])]
    twice = sum(xa * yb - xb * ya for (xa, ya), (xb, yb) in zip(corners, corners[1:] + corners[:1]))
    return 0.5 * twice.abs()


@pytest.mark.parametrize("name", ["planar", "radial", *INVERTIBLE])
def test_pushed_density_integrates_to_one_over_the_deformed_mesh(name):
    """Change of variables without an inverse: sum of q_K times the area of each deformed
    cell is the base mass of the grid, ~1 (independent of the flow)."""
    flow = global_flow(name)
    base = Window.square(-6, 6)
    (qk,) = layer_densities_pushforward(flow, standard_normal_log_prob, base, 401, [len(flow)])
    corner_mean = 0.25 * (qk.density[:-1, :-1] + qk.density[:-1, 1:] + qk.density[1:, :-1]
                          + qk.density[1:, 1:])
    mass = (corner_mean * quad_areas(qk.x, qk.y)).sum()
    assert abs(float(mass) - 1) < 5e-3
    # What the figures draw per cell (never above the corners' mean) holds the same mass.
    assert (qk.cell_density <= corner_mean + 1e-12).all()
    assert abs(float((qk.cell_density * quad_areas(qk.x, qk.y)).sum()) - 1) < 5e-3


@pytest.mark.parametrize("name", INVERTIBLE)
def test_inverse_and_pushforward_densities_agree(name):
    """q_k at the pushed nodes equals q_k evaluated there through the inverse, every k."""
    flow = global_flow(name)
    layers = list(range(len(flow) + 1))
    pushed = layer_densities_pushforward(flow, standard_normal_log_prob, Window.square(-2, 2),
                                         9, layers)
    for k, dmap in zip(layers, pushed):
        points = torch.stack([dmap.x.flatten(), dmap.y.flatten()], -1)
        z, log_det = points, torch.zeros(len(points), dtype=torch.float64)
        for layer in reversed(list(flow.layers)[:k]):
            z, ld = layer.inverse(z, None)
            log_det = log_det + ld
        expected = (standard_normal_log_prob(z) + log_det).exp()
        torch.testing.assert_close(dmap.density.flatten(), expected, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("name", INVERTIBLE)
def test_inverse_density_on_a_regular_grid_integrates_to_one(name):
    flow = global_flow(name)
    window = Window.square(-9, 9)
    (qk,) = layer_densities_inverse(flow, standard_normal_log_prob, window, 401, [len(flow)])
    cell = (18 / 400) ** 2
    assert abs(float(qk.density.sum()) * cell - 1) < 5e-3
    assert qk.regular and qk.density.shape == (401, 401)


def test_layer_densities_chooses_the_exact_path():
    planar = global_flow("planar")
    maps = layer_densities(planar, standard_normal_log_prob, Window.square(-4, 4),
                           Window.square(-4, 4), 20, [0, 3])
    assert not maps[0].regular and len(maps) == 2
    if INVERTIBLE:
        flow = global_flow(INVERTIBLE[0])
        maps = layer_densities(flow, standard_normal_log_prob, Window.square(-4, 4),
                               Window.square(-4, 4), 20, [0, 3])
        assert maps[1].regular
        torch.testing.assert_close(maps[1].x[0], torch.linspace(-4, 4, 20, dtype=torch.float64))


def test_inverse_does_not_touch_the_flow():
    """ActNorm initialises itself from its first forward batch; an inverse (a density
    drawn through it, say) must not be that batch."""
    if "glow" not in FLOW_FAMILIES:
        pytest.skip("no Glow family registered")
    flow = stack(2, None, partial(FLOW_FAMILIES["glow"]), 2, amortized=False)
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    assert flow.has_inverse
    with torch.no_grad():
        flow.inverse(3.0 + torch.randn(64, 2))
    for key, value in flow.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_planar_and_radial_have_no_inverse_and_are_named():
    assert {"planar", "radial"} <= set(NOT_INVERTIBLE)


def test_grid_lines_are_carried_layer_by_layer():
    flow = global_flow("planar", num_layers=2)
    lines = grid_lines(Window.square(-1, 1), 3, 5)
    assert lines.shape == (6, 5, 2)
    torch.testing.assert_close(lines[0, :, 0], torch.linspace(-1, 1, 5, dtype=torch.float64))
    carried = push_lines(flow, lines)
    assert len(carried) == 3
    torch.testing.assert_close(carried[0], lines)
    torch.testing.assert_close(carried[2].reshape(-1, 2), flow(lines.reshape(-1, 2))[0])


def test_window_grid_is_row_major_in_y_and_around_is_robust():
    x, y, points = Window((1.0, -1.0), (1.0, 2.0)).grid(3)
    torch.testing.assert_close(x[0], torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(y[:, 0], torch.tensor([-3.0, -1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(points[1], torch.tensor([1.0, -3.0], dtype=torch.float64))
    cloud = torch.cat([torch.randn(10_000, 2) * 0.1 + 5, torch.tensor([[100.0, 100.0]])])
    window = Window.around(cloud)
    assert abs(window.centre[0] - 5) < 0.05 and window.half_width[0] < 1
    assert window.half_width[0] == window.half_width[1]
    with pytest.raises(ValueError, match="low < high"):
        Window.square(1, 1)


def test_evenly_spaced_layers_keep_the_ends():
    assert evenly_spaced_layers(4, 9) == [0, 1, 2, 3, 4]
    picks = evenly_spaced_layers(32, 9)
    assert picks[0] == 0 and picks[-1] == 32 and len(picks) == 9
    with pytest.raises(ValueError, match="max_panels"):
        evenly_spaced_layers(3, 1)


def test_planar_geometry_hyperplane_is_where_the_layer_is_still():
    """On w.z + b = 0, tanh = 0: the layer leaves those points in place; the drawn
    u_hat is the direction points move, w.u_hat > -1 (the invertibility constraint)."""
    torch.manual_seed(3)
    layer = PlanarFlow(dim=2, amortized=False).double()
    with torch.no_grad():
        layer.params.flat.copy_(2 * torch.randn_like(layer.params.flat))
    geometry = layer_geometry(layer)
    w, b = geometry.w, geometry.b
    direction = torch.stack([-w[1], w[0]])
    along = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    on_plane = -b * w / w.dot(w) + along * direction
    torch.testing.assert_close(layer(on_plane)[0], on_plane)
    off = on_plane + w
    shift = layer(off)[0] - off
    cross = shift[:, 0] * geometry.u_hat[1] - shift[:, 1] * geometry.u_hat[0]
    torch.testing.assert_close(cross, torch.zeros_like(cross), atol=1e-12, rtol=0)
    assert float(w.dot(geometry.u_hat)) > -1


def test_radial_geometry_centre_is_a_fixed_point():
    torch.manual_seed(4)
    layer = RadialFlow(dim=2, amortized=False).double()
    with torch.no_grad():
        layer.params.flat.copy_(2 * torch.randn_like(layer.params.flat))
    geometry = layer_geometry(layer)
    torch.testing.assert_close(layer(geometry.z_ref[None])[0][0], geometry.z_ref)
    assert geometry.alpha > 0 and geometry.beta >= -geometry.alpha
    assert layer_geometry(RadialFlow(dim=2, context_dim=3, amortized=True)) is None


def test_activity_from_draws_removes_monte_carlo_noise():
    """A unit whose posterior mean never changes is inactive however noisy its draws;
    the naive variance of S-draw means would call it active (sigma^2 / S = 0.0625)."""
    torch.manual_seed(0)
    n, s = 4000, 16
    means = torch.stack([torch.randn(n) * 0.5, torch.zeros(n)], -1)      # A = 0.25, 0
    draws = means + torch.randn(s, n, 2)                                  # sigma = 1
    naive = activity(draws.mean(0))
    corrected = activity_from_draws(draws)
    assert naive[1] > 0.05 > 0.01
    assert abs(float(corrected[1])) < 0.01
    assert abs(float(corrected[0]) - 0.25) < 0.03
    with pytest.raises(ValueError, match="at least 2 draws"):
        activity_from_draws(draws[:1])


def test_kl_per_dimension_matches_torch_distributions():
    mu, log_sigma = torch.randn(50, 3, dtype=torch.float64), torch.randn(50, 3, dtype=torch.float64)
    expected = kl_divergence(Normal(mu, log_sigma.exp()), Normal(0.0, 1.0)).mean(0)
    torch.testing.assert_close(kl_q0_per_dimension(mu, log_sigma), expected)


def test_traversal_walks_the_principal_directions():
    torch.manual_seed(0)
    points = torch.randn(5000, 3) * torch.tensor([3.0, 1.0, 0.1]) + torch.tensor([1.0, 2.0, 3.0])
    traversal = traversal_latents(points, num_directions=2, num_steps=5, span=2.0)
    assert traversal.latents.shape == (2, 5, 3)
    first = traversal.latents[0]
    torch.testing.assert_close(first[2], points.mean(0), atol=1e-4, rtol=0)
    # PC 1 is the first axis; +-2 standard deviations (3) of it.
    torch.testing.assert_close((first[-1] - first[2]).abs(), torch.tensor([6.0, 0.0, 0.0]),
                               atol=0.2, rtol=0)
    assert 0.85 < float(traversal.explained[0]) < 0.95


def test_histogram_density_integrates_to_one_and_pick_examples_is_varied():
    points = torch.rand(10_000, 2) * 2 - 1
    dmap = histogram_density(points, Window.square(-1, 1), 20)
    assert abs(float(dmap.density.sum()) * 0.1**2 - 1) < 1e-6
    labels = torch.tensor([3, 3, 1, 2, 1, 0, 0])
    assert pick_examples(labels, 5).tolist() == [5, 2, 3, 0, 1]
    assert math.isclose(float(dmap.density.mean()), 0.25, rel_tol=0.05)
