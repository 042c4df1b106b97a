"""Family-specific properties of the flow zoo, each against an independent reference.

The generic checks (log-det vs brute-force Jacobian, gradients, inverse) are in
test_flows.py; here: the starting map of each family, the structure the
paper's argument relies on (orthogonal Q, triangular Jacobians, alternating
masks), constraint edge cases, and data-dependent initialisation.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from nfvae.flows import (
    ActNorm,
    AffineCouplingFlow,
    GlowStep,
    HouseholderFlow,
    HouseholderSylvesterFlow,
    IAFFlow,
    LULinear,
    OrthogonalSylvesterFlow,
    SplineCouplingFlow,
    TriangularSylvesterFlow,
    initialize_by_inverse,
    stack,
)
from nfvae.flows.rational_quadratic import rational_quadratic_spline
from nfvae.flows.sylvester import log_det_factors, one_plus_diagonal_product
from nfvae.flows.sylvester_orthogonal import orthogonalize

F64 = torch.float64


def jac(flow, z_row, context_row=None):
    """Full Jacobian of one example (D, D)."""
    ctx = None if context_row is None else context_row.unsqueeze(0)
    return jacobian(lambda zi: flow(zi.unsqueeze(0), ctx)[0].squeeze(0), z_row)


# -- Householder ---------------------------------------------------------------------------

def test_householder_layer_is_a_rotation_and_one_reflection_reverses_orientation():
    torch.manual_seed(0)
    z = torch.randn(5, 6, dtype=F64)
    rotation = HouseholderFlow(6, amortized=False).double()
    j = jac(rotation, z[0])
    torch.testing.assert_close(j.T @ j, torch.eye(6, dtype=F64))
    assert torch.linalg.det(j) == pytest.approx(1.0)
    reflection = HouseholderFlow(6, amortized=False, num_reflections=1).double()
    _, log_det = reflection(z)
    assert torch.linalg.det(jac(reflection, z[0])) == pytest.approx(-1.0)
    assert (log_det == 0).all()  # log|det| is still 0: the density is unaffected


# -- Sylvester -----------------------------------------------------------------------------

@pytest.mark.parametrize(("d", "m"), [(6, 3), (5, 5), (64, 32)])
def test_orthogonalisation_gives_the_polar_factor(d, m):
    """Bjorck's iteration converges to U V^T of A = U S V^T (computed here by SVD)."""
    torch.manual_seed(0)
    a = torch.randn(4, d, m, dtype=F64)
    q = orthogonalize(a)
    torch.testing.assert_close(q.transpose(1, 2) @ q, torch.eye(m, dtype=F64).expand(4, m, m),
                               atol=1e-12, rtol=0)
    u, _, vh = torch.linalg.svd(a, full_matrices=False)
    torch.testing.assert_close(q, u @ vh, atol=1e-10, rtol=0)


def test_orthogonalisation_converges_when_the_power_estimate_misses_the_top_direction():
    """The power iteration starts from ones; a top right-singular vector orthogonal to
    it gives a far too small estimate of ||A||_2, and the Frobenius floor takes over."""
    v = torch.tensor([[1.0, 1.0], [-1.0, 1.0]], dtype=F64) / 2 ** 0.5  # v_1 _|_ (1, 1)
    u, _ = torch.linalg.qr(torch.randn(5, 2, dtype=F64))
    a = (u @ torch.diag(torch.tensor([3.0, 1.0], dtype=F64)) @ v.T).unsqueeze(0)
    q = orthogonalize(a)
    torch.testing.assert_close(q[0], u @ v.T, atol=1e-10, rtol=0)


def test_orthogonalisation_of_a_shared_matrix_equals_the_per_example_one():
    a = torch.randn(1, 6, 3, dtype=F64)
    shared = orthogonalize(a.expand(5, -1, -1))
    torch.testing.assert_close(shared, orthogonalize(a.repeat(5, 1, 1)))


def _dense_sylvester(z, r, r_diag, b, q):
    """z + Q R tanh(R~ Q^T z + b) with dense matrices, the paper's formula as written."""
    big_r = torch.triu(r, 1) + torch.diag_embed(torch.tanh(r_diag[:, 0]))
    big_rt = torch.triu(r.transpose(1, 2), 1) + torch.diag_embed(torch.tanh(r_diag[:, 1]))
    inner = (big_rt @ (q.transpose(1, 2) @ z.unsqueeze(-1))).squeeze(-1) + b
    return z + (q @ big_r @ torch.tanh(inner).unsqueeze(-1)).squeeze(-1)


def test_householder_sylvester_matches_the_dense_formula_with_explicit_q():
    torch.manual_seed(0)
    d, h, batch = 5, 3, 4
    flow = HouseholderSylvesterFlow(d, amortized=False, num_householder=h).double()
    raw = {"r": torch.randn(batch, d, d, dtype=F64), "r_diag": torch.randn(batch, 2, d, dtype=F64),
           "b": torch.randn(batch, d, dtype=F64), "v": torch.randn(batch, h, d, dtype=F64)}
    q = torch.eye(d, dtype=F64).expand(batch, d, d)
    for k in range(h):  # Q = H(v_1) H(v_2) ... H(v_H)
        v = raw["v"][:, k] / raw["v"][:, k].norm(dim=-1, keepdim=True)
        q = q @ (torch.eye(d, dtype=F64) - 2 * v.unsqueeze(-1) * v.unsqueeze(-2))
    torch.testing.assert_close(q.transpose(1, 2) @ q, torch.eye(d, dtype=F64).expand(batch, d, d))
    z = torch.randn(batch, d, dtype=F64)
    z_new, _ = flow.transform(z, **raw)
    torch.testing.assert_close(z_new, _dense_sylvester(z, raw["r"], raw["r_diag"], raw["b"], q))


@pytest.mark.parametrize("layer_index", [0, 1])
def test_triangular_sylvester_matches_the_dense_formula_with_identity_or_reversal(layer_index):
    torch.manual_seed(0)
    d, batch = 4, 3
    flow = TriangularSylvesterFlow(d, amortized=False, layer_index=layer_index).double()
    raw = {"r": torch.randn(batch, d, d, dtype=F64), "r_diag": torch.randn(batch, 2, d, dtype=F64),
           "b": torch.randn(batch, d, dtype=F64)}
    q = torch.eye(d, dtype=F64)
    if layer_index == 1:
        q = q.flip(0)
    z = torch.randn(batch, d, dtype=F64)
    z_new, _ = flow.transform(z, **raw)
    expected = _dense_sylvester(z, raw["r"], raw["r_diag"], raw["b"], q.expand(batch, d, d))
    torch.testing.assert_close(z_new, expected)


def test_orthogonal_sylvester_keeps_m_columns_and_rejects_m_above_d():
    flow = OrthogonalSylvesterFlow(6, context_dim=3, num_ortho_vecs=2)
    assert flow.params.shapes["q"] == (6, 2) and flow.params.shapes["r"] == (2, 2)
    assert OrthogonalSylvesterFlow(64, context_dim=3).num_vecs == 32
    with pytest.raises(ValueError, match=r"M must be in \[1, D\] = \[1, 6\], got 7"):
        OrthogonalSylvesterFlow(6, context_dim=3, num_ortho_vecs=7)


def test_sylvester_shares_one_matrix_between_r_and_r_tilde():
    """The amortized head's size: M^2 + 3M + D M (O-SNF), not 2 M^2 (two full matrices)."""
    flow = OrthogonalSylvesterFlow(64, context_dim=300, num_ortho_vecs=32)
    assert flow.params.head.out_features == 32 * 32 + 2 * 32 + 32 + 64 * 32
    flow = HouseholderSylvesterFlow(64, context_dim=300, num_householder=8)
    assert flow.params.head.out_features == 64 * 64 + 2 * 64 + 64 + 8 * 64


@pytest.mark.parametrize("family", [OrthogonalSylvesterFlow, HouseholderSylvesterFlow,
                                    TriangularSylvesterFlow])
def test_sylvester_with_its_own_r_tilde_matrix_is_exact_too(family):
    """shared_triangles=false (the comparison the benchmark measures) under the same checks."""
    from test_flows import assert_log_det_exact, stress

    torch.manual_seed(0)
    flow = stress(family(4, context_dim=3, shared_triangles=False).double())
    assert "r_tilde" in flow.params.shapes
    z, context = 2 * torch.randn(6, 4, dtype=F64), torch.randn(6, 3, dtype=F64)
    _, log_det = flow(z, context)
    assert_log_det_exact(flow, z, context, log_det)


def test_sylvester_log_det_stays_finite_when_both_diagonals_saturate():
    """r_ii r~_ii -> -1 with h' = 1: 1 + r r~ = 1 - tanh^2(20) = sech^2(20), which rounds
    to 0 if computed from tanh in any float format; the closed form is -2 log cosh 20."""
    pre = torch.zeros(1, 1, dtype=torch.float32)
    r_diag = torch.tensor([[[20.0], [-20.0]]])
    value = log_det_factors(pre, one_plus_diagonal_product(r_diag))
    expected = -2 * (20 - math.log(2) + math.log1p(math.exp(-40)))
    assert torch.isfinite(value).all()
    assert float(value) == pytest.approx(expected, rel=1e-6)


# -- IAF -----------------------------------------------------------------------------------

def test_iaf_is_autoregressive_and_reverses_its_ordering_on_odd_layers():
    torch.manual_seed(0)
    z, context = torch.randn(6, dtype=F64), torch.randn(3, dtype=F64)
    for layer_index, triangle in [(0, torch.tril), (1, torch.triu)]:
        flow = IAFFlow(6, context_dim=3, layer_index=layer_index).double()
        torch.nn.init.normal_(flow.made.out.weight)  # leave the zero start
        j = jac(flow, z, context)
        torch.testing.assert_close(j, triangle(j))  # z'_i depends on z_j, j before i only
        assert (j.diagonal() > 0).all() and (j.diagonal() < 1).all()  # sigma in (0, 1)


def test_iaf_starts_at_sigmoid_of_forget_bias_times_z():
    flow = IAFFlow(5, context_dim=3, forget_bias=2.0).double()
    z = torch.randn(4, 5, dtype=F64)
    z_new, log_det = flow(z, torch.randn(4, 3, dtype=F64))
    sigma = torch.sigmoid(torch.tensor(2.0, dtype=F64))
    torch.testing.assert_close(z_new, sigma * z)
    torch.testing.assert_close(log_det, torch.full((4,), 5 * math.log(sigma), dtype=F64))


# -- couplings -----------------------------------------------------------------------------

@pytest.mark.parametrize("family", [AffineCouplingFlow, SplineCouplingFlow])
def test_coupling_starts_as_identity_and_alternates_halves(family):
    z = 2 * torch.randn(8, 5, dtype=F64)  # some beyond the spline's tail bound 3
    context = torch.randn(8, 3, dtype=F64)
    fresh = family(5, context_dim=3).double()
    z_new, log_det = fresh(z, context)
    torch.testing.assert_close(z_new, z)
    torch.testing.assert_close(log_det, torch.zeros(8, dtype=F64))

    torch.manual_seed(0)
    layers = stack(5, 3, family=family, num_layers=2).double()
    for layer in layers.layers:
        torch.nn.init.normal_(layer.net.out.weight)
    z1, _ = layers.layers[0](z, context)
    assert torch.equal(z1[:, :2], z[:, :2]) and not torch.allclose(z1[:, 2:], z[:, 2:])
    z2, _ = layers.layers[1](z, context)
    assert torch.equal(z2[:, 2:], z[:, 2:]) and not torch.allclose(z2[:, :2], z[:, :2])


def test_affine_coupling_log_scale_is_soft_clamped():
    flow = AffineCouplingFlow(4, amortized=False, max_log_scale=2.0).double()
    with torch.no_grad():
        flow.net.out.bias.fill_(1e3)  # raw log-scales far beyond the clamp
    _, log_det = flow(torch.randn(3, 4, dtype=F64))
    assert (log_det <= 2 * 2.0).all() and (log_det > 2 * 2.0 - 1e-6).all()


def test_coupling_needs_two_dimensions():
    with pytest.raises(ValueError, match="needs dim >= 2, got 1"):
        AffineCouplingFlow(1, context_dim=3)


# -- rational-quadratic spline --------------------------------------------------------------

def _spline_params(shape, num_bins=5, scale=2.0):
    torch.manual_seed(1)
    return (scale * torch.randn(*shape, num_bins, dtype=F64),
            scale * torch.randn(*shape, num_bins, dtype=F64),
            scale * torch.randn(*shape, num_bins - 1, dtype=F64))


def test_spline_interpolates_its_knots_with_the_declared_slopes():
    """At x_k the spline equals y_k with slope d_k (Gregory & Delbourgo's construction)."""
    from nfvae.flows.rational_quadratic import (
        MIN_BIN_HEIGHT,
        MIN_BIN_WIDTH,
        _derivatives,
        _knots,
    )

    widths, heights, slopes = _spline_params((1,))
    _, x_knots = _knots(widths, 3.0, MIN_BIN_WIDTH)
    _, y_knots = _knots(heights, 3.0, MIN_BIN_HEIGHT)
    d = _derivatives(slopes)
    x = x_knots[0, 1:-1].clone().requires_grad_(True)  # interior knots
    k = x.shape[0]
    y, log_slope = rational_quadratic_spline(
        x, widths.expand(k, -1), heights.expand(k, -1), slopes.expand(k, -1), 3.0)
    torch.testing.assert_close(y, y_knots[0, 1:-1])
    torch.testing.assert_close(log_slope.exp(), d[0, 1:-1])


def test_spline_is_increasing_with_identity_tails_and_matches_autograd_slope():
    widths, heights, slopes = (p.expand(2001, -1) for p in _spline_params((1,)))
    x = torch.linspace(-4.0, 4.0, 2001, dtype=F64).requires_grad_(True)
    y, log_slope = rational_quadratic_spline(x, widths, heights, slopes, bound=3.0)
    assert (y[1:] > y[:-1]).all()
    outside = x.abs() > 3.0
    assert torch.equal(y[outside], x[outside]) and (log_slope[outside] == 0).all()
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(log_slope, grad.log())
    x_back, inverse_log_slope = rational_quadratic_spline(y.detach(), widths, heights, slopes,
                                                          bound=3.0, inverse=True)
    torch.testing.assert_close(x_back, x.detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(inverse_log_slope, -log_slope.detach())


# -- ActNorm, LU linear map, Glow ------------------------------------------------------------

def test_actnorm_standardises_its_first_batch_then_keeps_its_parameters():
    torch.manual_seed(0)
    z = 3.0 + 2.0 * torch.randn(500, 4, dtype=F64)
    norm = ActNorm(4).double()
    out, log_det = norm(z)
    torch.testing.assert_close(out.mean(0), torch.zeros(4, dtype=F64))
    torch.testing.assert_close(out.std(0, unbiased=False), torch.ones(4, dtype=F64))
    torch.testing.assert_close(log_det, -z.std(0, unbiased=False).log().sum().expand(500))
    again, _ = norm(z + 10.0)  # no re-initialisation on later batches
    torch.testing.assert_close(again, out + 10.0 * norm.log_scale.exp())
    restored = ActNorm(4).double()
    restored.load_state_dict(norm.state_dict())  # the flag travels with checkpoints
    torch.testing.assert_close(restored(z)[0], out)


def test_actnorm_initialised_by_an_inverse_standardises_the_inverse_output():
    x = 5.0 - 0.5 * torch.randn(400, 3, dtype=F64)
    norm = ActNorm(3).double()
    norm.inverse(x)  # outside initialize_by_inverse: no side effect
    assert not norm.initialized
    with initialize_by_inverse(norm):
        z, _ = norm.inverse(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=F64))
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(3, dtype=F64))
    again, _ = norm.inverse(x + 1.0)  # initialised once, then a fixed map
    torch.testing.assert_close(again, z + (-norm.log_scale).exp())


def test_lu_linear_starts_as_a_rotation_and_keeps_positive_orientation():
    torch.manual_seed(0)
    linear = LULinear(6).double()
    w = linear.weight()
    torch.testing.assert_close(w.T @ w, torch.eye(6, dtype=F64))
    with torch.no_grad():
        for p in linear.parameters():
            p.normal_()
    sign, log_abs = torch.linalg.slogdet(linear.weight())
    assert sign == 1
    torch.testing.assert_close(linear(torch.randn(2, 6, dtype=F64))[1], log_abs.expand(2))


def test_glow_step_starts_as_standardisation_then_rotation():
    torch.manual_seed(0)
    z = 1.0 + 3.0 * torch.randn(300, 4, dtype=F64)
    step = GlowStep(4, context_dim=2).double()
    out, log_det = step(z, torch.randn(300, 2, dtype=F64))
    std = z.std(0, unbiased=False)
    rotation = step.linear.weight()
    torch.testing.assert_close(out, ((z - z.mean(0)) / std) @ rotation.T)
    torch.testing.assert_close(log_det, -std.log().sum().expand(300))


def test_glow_checks_context_before_actnorm_initialises():
    step = GlowStep(4, context_dim=2)
    with pytest.raises(ValueError, match="context"):
        step(torch.randn(5, 4), None)
    assert not step.actnorm.initialized
