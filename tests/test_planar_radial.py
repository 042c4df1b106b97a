"""Family-specific properties of the planar and radial flows."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nfvae.flows import PlanarFlow, RadialFlow, stack


def test_planar_constraint_keeps_w_dot_u_hat_above_minus_one():
    torch.manual_seed(0)
    u = 3 * torch.randn(10_000, 6, dtype=torch.float64)
    w = 3 * torch.randn(10_000, 6, dtype=torch.float64)
    w_dot_u = (w * u).sum(-1)
    u_hat = PlanarFlow(dim=6, amortized=False).constrain(u=u, w=w, b=w[:, :1])["u_hat"]
    w_dot_u_hat = (w * u_hat).sum(-1)
    # Strictly above -1 wherever softplus(w.u) is not lost to rounding against 1;
    # below that, within rounding of -1 (the log-det is computed without m, below).
    assert (w_dot_u_hat[w_dot_u > -20] > -1).all()
    assert (w_dot_u_hat >= -1 - 1e-12).all()
    # It is exactly m(w.u) = -1 + softplus(w.u).
    torch.testing.assert_close(w_dot_u_hat, -1 + F.softplus(w_dot_u))


def test_planar_log_det_finite_and_exact_where_m_rounds_to_minus_one():
    from torch.autograd.functional import jacobian

    flow = PlanarFlow(dim=2, amortized=False).double()
    z = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    raw = {"u": torch.tensor([[-40.0, 0.0]], dtype=torch.float64),
           "w": torch.tensor([[2.0, 0.0]], dtype=torch.float64),
           "b": torch.tensor([[0.1]], dtype=torch.float64)}  # w.u = -80
    _, log_det = flow.transform(z, **raw)
    jac = jacobian(lambda zi: flow.transform(zi.unsqueeze(0), **raw)[0].squeeze(0), z[0])
    assert torch.isfinite(log_det).all()
    torch.testing.assert_close(log_det[0], torch.linalg.slogdet(jac)[1], atol=1e-8, rtol=1e-8)


def test_planar_with_zero_initialised_head_is_finite():
    flow = PlanarFlow(dim=3, context_dim=2, amortized=True)
    torch.nn.init.zeros_(flow.params.head.weight)
    torch.nn.init.zeros_(flow.params.head.bias)
    z = torch.randn(5, 3)
    z_new, log_det = flow(z, torch.randn(5, 2))
    assert torch.isfinite(z_new).all() and torch.isfinite(log_det).all()
    torch.testing.assert_close(z_new, z)  # u = w = b = 0 is the identity


def test_radial_with_beta_zero_is_identity():
    flow = RadialFlow(dim=3, amortized=False).double()
    z = torch.randn(7, 3, dtype=torch.float64)
    alpha_raw = torch.randn(7, 1, dtype=torch.float64)
    # beta = -alpha + softplus(beta_raw) = 0  <=>  softplus(beta_raw) = softplus(alpha_raw)
    z_new, log_det = flow.transform(z, z_ref=torch.randn(7, 3, dtype=torch.float64),
                                    alpha_raw=alpha_raw, beta_raw=alpha_raw.clone())
    torch.testing.assert_close(z_new, z)
    torch.testing.assert_close(log_det, torch.zeros(7, dtype=torch.float64))


def test_radial_log_det_stays_finite_for_extreme_contraction():
    flow = RadialFlow(dim=5, amortized=False).double()
    z = torch.randn(4, 5, dtype=torch.float64)
    _, log_det = flow.transform(z, z_ref=torch.zeros(4, 5, dtype=torch.float64),
                                alpha_raw=torch.full((4, 1), 5.0, dtype=torch.float64),
                                beta_raw=torch.full((4, 1), -30.0, dtype=torch.float64))
    assert torch.isfinite(log_det).all()


def test_stack_validates_layer_count():
    import pytest

    with pytest.raises(ValueError, match="num_layers must be >= 0"):
        stack(dim=2, context_dim=3, family=PlanarFlow, num_layers=-1)
    assert len(stack(dim=2, family=None, num_layers=0)) == 0
    assert len(stack(dim=2, context_dim=3, family=PlanarFlow, num_layers=3)) == 3
