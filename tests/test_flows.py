"""Generic checks run on every family of nfvae.flows.FLOW_FAMILIES, amortized and global.

Adding a family to the registry puts it under all of these tests.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from nfvae.flows import (
    FLOW_FAMILIES,
    ActNorm,
    FlowSequence,
    InverseNotAvailable,
    LULinear,
    stack,
)
from nfvae.flows.made import MADE

DIM, CONTEXT, BATCH = 4, 5, 6
FAMILIES = sorted(FLOW_FAMILIES)
MODES = [pytest.param(True, id="amortized"), pytest.param(False, id="global")]


def stress(flow: torch.nn.Module, scale: float = 3.0) -> torch.nn.Module:
    """Draw every parameter large (scale * randn, matrices over sqrt(fan-in)).

    Raw parameters of parametrized flows and the conditioner weights of coupling
    and spline flows are drawn at ``scale`` to push the constraints (tanh, softmax,
    softplus, soft clamps) into saturation. Three kinds of parameter have no
    constraint to stress, only conditioning that would defeat the float64
    references (brute-force slogdet, round trip), so they are drawn at unit scale:
    the log-scales of ActNorm and the LU map and the LU factors (a stack of three
    Glow steps at 3 * randn has Jacobians with condition number ~1e17), and the
    MADE weights of IAF, whose s is unbounded as in the paper (at 3x, s reaches
    +-35 and sigma = 1e-15 makes the step non-invertible in float64). ActNorm is
    marked initialised so that its data-dependent initialisation keeps the draw.
    """

    def draw(p: torch.Tensor, s: float) -> None:
        p.copy_(s * torch.randn_like(p) / (p.shape[-1] ** 0.5 if p.dim() > 1 else 1))

    with torch.no_grad():
        for p in flow.parameters():
            draw(p, scale)
        for module in flow.modules():
            if isinstance(module, ActNorm):
                draw(module.log_scale, 1.0)
                module.initialized.fill_(True)
            elif isinstance(module, LULinear):
                for p in module.parameters():
                    draw(p, 1.0)
            elif isinstance(module, MADE):
                for p in module.parameters():
                    if p.dim() > 1:
                        draw(p, 1.0)
    return flow


def make_flow(name: str, amortized: bool, seed: int = 0, **options) -> torch.nn.Module:
    """A float64 flow of the registry with its parameters drawn large."""
    torch.manual_seed(seed)
    flow = FLOW_FAMILIES[name](dim=DIM, context_dim=CONTEXT, amortized=amortized, **options)
    return stress(flow.double())


def make_stack(name: str, amortized: bool, num_layers: int = 3, seed: int = 0) -> FlowSequence:
    """A float64 stack built by ``stack`` (alternating masks and orderings).

    Parameters at unit scale: the single-layer tests stress the constraints; this
    one checks composition, and three stressed spline or coupling layers compose
    to slopes of ~1e-12, beyond a 1e-6 round trip in float64.
    """
    torch.manual_seed(seed)
    flows = stack(DIM, CONTEXT, family=FLOW_FAMILIES[name], num_layers=num_layers,
                  amortized=amortized)
    return stress(flows.double(), scale=1.0)


def brute_force_log_det(flow, z, context):
    """log|det J| per example from the full autograd Jacobian, and the sign of det J."""
    log_dets, signs = [], []
    for i in range(z.shape[0]):
        ctx = None if context is None else context[i:i + 1]
        jac = jacobian(lambda zi, ctx=ctx: flow(zi.unsqueeze(0), ctx)[0].squeeze(0), z[i])
        sign, log_abs = torch.linalg.slogdet(jac)
        log_dets.append(log_abs)
        signs.append(sign)
    return torch.stack(log_dets), torch.stack(signs)


def assert_log_det_exact(flow, z, context, log_det):
    """log_det matches the brute-force Jacobian, whose determinant is positive."""
    expected, sign = brute_force_log_det(flow, z, context)
    torch.testing.assert_close(log_det, expected, atol=1e-8, rtol=1e-8)
    assert (sign > 0).all(), "an invertible flow in the sampling direction keeps orientation"


def assert_inverse_round_trip(flow, z, context, z_new, log_det):
    """flow.inverse takes z_new back to z with the negated log-det where the flow declares
    an inverse (``has_inverse``), and raises the named error where it declares none."""
    if not flow.has_inverse:
        with pytest.raises(InverseNotAvailable):
            flow.inverse(z_new, context)
        return
    z_back, inverse_log_det = flow.inverse(z_new, context)
    torch.testing.assert_close(z_back, z, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(inverse_log_det, -log_det, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("amortized", MODES)
@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_det_matches_autograd_jacobian(name, amortized, seed):
    flow = make_flow(name, amortized, seed)
    z = 2 * torch.randn(BATCH, DIM, dtype=torch.float64)
    context = torch.randn(BATCH, CONTEXT, dtype=torch.float64)
    z_new, log_det = flow(z, context)
    assert z_new.shape == (BATCH, DIM) and log_det.shape == (BATCH,)
    assert z_new.dtype == torch.float64 and log_det.dtype == torch.float64
    assert_log_det_exact(flow, z, context, log_det)


@pytest.mark.parametrize("amortized", MODES)
@pytest.mark.parametrize("name", FAMILIES)
def test_sequence_sums_layer_log_dets(name, amortized):
    layers = [make_flow(name, amortized, seed) for seed in range(3)]
    sequence = FlowSequence(layers)
    z = torch.randn(BATCH, DIM, dtype=torch.float64)
    context = torch.randn(BATCH, CONTEXT, dtype=torch.float64)
    zK, sum_log_det = sequence(z, context)
    expected, _ = brute_force_log_det(sequence, z, context)
    torch.testing.assert_close(sum_log_det, expected, atol=1e-8, rtol=1e-8)
    points, log_dets = sequence.trajectory(z, context)
    assert len(points) == 4 and torch.equal(points[-1], zK)
    torch.testing.assert_close(torch.stack(log_dets).sum(0), sum_log_det)


@pytest.mark.parametrize("amortized", MODES)
@pytest.mark.parametrize("name", FAMILIES)
def test_stack_alternates_layers_and_keeps_exact_log_det_and_inverse(name, amortized):
    """Through ``stack``: layers that alternate (masks, orderings) still compose exactly."""
    sequence = make_stack(name, amortized)
    z = 2 * torch.randn(BATCH, DIM, dtype=torch.float64)
    context = torch.randn(BATCH, CONTEXT, dtype=torch.float64)
    zK, sum_log_det = sequence(z, context)
    assert_log_det_exact(sequence, z, context, sum_log_det)
    assert_inverse_round_trip(sequence, z, context, zK, sum_log_det)


@pytest.mark.parametrize("amortized", MODES)
@pytest.mark.parametrize("name", FAMILIES)
def test_gradients_reach_every_parameter(name, amortized):
    flow = make_flow(name, amortized)
    z = torch.randn(BATCH, DIM, dtype=torch.float64)
    context = torch.randn(BATCH, CONTEXT, dtype=torch.float64, requires_grad=True)
    z_new, log_det = flow(z, context)
    (z_new.pow(2).sum() + log_det.sum()).backward()
    for param_name, p in flow.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {param_name}"
    if amortized:
        assert context.grad is not None and context.grad.abs().sum() > 0


@pytest.mark.parametrize("amortized", MODES)
@pytest.mark.parametrize("name", FAMILIES)
def test_inverse_round_trip_or_named_error(name, amortized):
    flow = make_flow(name, amortized)
    z = torch.randn(BATCH, DIM, dtype=torch.float64)
    context = torch.randn(BATCH, CONTEXT, dtype=torch.float64)
    z_new, log_det = flow(z, context)
    assert_inverse_round_trip(flow, z, context, z_new, log_det)


@pytest.mark.parametrize("name", FAMILIES)
def test_amortized_flow_needs_context_and_checks_shapes(name):
    flow = FLOW_FAMILIES[name](dim=DIM, context_dim=CONTEXT, amortized=True)
    with pytest.raises(ValueError, match="context"):
        flow(torch.randn(BATCH, DIM), None)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        flow(torch.randn(BATCH, DIM + 1), torch.randn(BATCH, CONTEXT))


@pytest.mark.parametrize("name", FAMILIES)
def test_global_flow_ignores_context_and_shares_parameters(name):
    flow = make_flow(name, amortized=False)
    z = torch.randn(1, DIM, dtype=torch.float64).expand(3, DIM)
    z_new, log_det = flow(z, None)
    torch.testing.assert_close(z_new[0], z_new[2])
    torch.testing.assert_close(log_det[0], log_det[2])
    z_ctx, log_det_ctx = flow(z, torch.randn(3, CONTEXT, dtype=torch.float64))
    torch.testing.assert_close(z_ctx, z_new)
    torch.testing.assert_close(log_det_ctx, log_det)


@pytest.mark.parametrize("amortized", MODES)
@pytest.mark.parametrize("name", FAMILIES)
def test_repeated_samples_match_a_repeated_context(name, amortized):
    """forward_repeated(z, context, S) is forward(z, context repeated S times): flows
    that compute their parameters once per data point must not change the map."""
    flows = make_stack(name, amortized)
    samples = 3
    z = torch.randn(samples * BATCH, DIM, dtype=torch.float64)
    context = torch.randn(BATCH, CONTEXT, dtype=torch.float64)
    expected = flows(z, context.repeat(samples, 1))
    actual = flows.forward_repeated(z, context, samples)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, atol=1e-12, rtol=1e-10)
    # Row s*B + b belongs to data point b: a shuffled context changes the result.
    shuffled = flows.forward_repeated(z, context.roll(1, dims=0), samples)[0]
    if amortized:
        assert not torch.allclose(shuffled, actual[0])


@pytest.mark.parametrize("name", FAMILIES)
def test_repeated_samples_reject_rows_that_do_not_match_the_context(name):
    flows = make_stack(name, True, num_layers=1)
    context = torch.randn(BATCH, CONTEXT, dtype=torch.float64)
    with pytest.raises(ValueError, match="rows"):
        flows.forward_repeated(torch.randn(2 * BATCH + 1, DIM, dtype=torch.float64), context, 2)
    with pytest.raises(ValueError, match="context has"):
        flows.forward_repeated(torch.randn(3 * BATCH, DIM, dtype=torch.float64),
                               context[:-1], 3)
