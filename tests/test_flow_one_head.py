"""FlowSequence's one head (every layer's raw parameters from one GEMM, constrained in
one call where the family allows) computes exactly what the layers compute one by one,
keeps the state_dict of the layer-by-layer stack, and is what the shipped stacks use."""

from __future__ import annotations

import pytest
import torch

from nfvae.flows import FLOW_FAMILIES, FlowSequence, ParametrizedFlow
from tests.test_flows import BATCH, CONTEXT, DIM, FAMILIES, MODES, make_flow

PARAMETRIZED = [name for name in FAMILIES
                if isinstance(FLOW_FAMILIES[name](dim=DIM, context_dim=CONTEXT), ParametrizedFlow)]


def pair(name: str, amortized: bool) -> tuple[FlowSequence, FlowSequence]:
    """The same three stressed layers, as one head and layer by layer."""
    layers = [make_flow(name, amortized, seed) for seed in range(3)]
    return FlowSequence(layers), FlowSequence(layers, one_head=False)


@pytest.mark.parametrize("amortized", MODES)
@pytest.mark.parametrize("name", PARAMETRIZED)
def test_one_head_equals_layer_by_layer(name, amortized):
    one, each = pair(name, amortized)
    assert one.one_head and not each.one_head
    z = torch.randn(BATCH, DIM, dtype=torch.float64)
    context = torch.randn(BATCH, CONTEXT, dtype=torch.float64, requires_grad=True)
    z_one, ld_one = one(z, context)
    z_each, ld_each = each(z, context)
    torch.testing.assert_close(z_one, z_each, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ld_one, ld_each, rtol=1e-12, atol=1e-12)
    # Gradients reach every layer's own head (or vector) and the context alike.
    params = list(one.parameters()) + ([context] if amortized else [])
    grads_one = torch.autograd.grad((z_one.sum() + ld_one.sum()), params)
    grads_each = torch.autograd.grad((z_each.sum() + ld_each.sum()), params)
    for g_one, g_each in zip(grads_one, grads_each, strict=True):
        assert g_one.abs().sum() > 0
        torch.testing.assert_close(g_one, g_each, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("amortized", MODES)
@pytest.mark.parametrize("name", PARAMETRIZED)
def test_one_head_repeated_samples_equal_layer_by_layer(name, amortized):
    one, each = pair(name, amortized)
    repeats = 3
    z = torch.randn(repeats * BATCH, DIM, dtype=torch.float64)
    context = torch.randn(BATCH, CONTEXT, dtype=torch.float64)
    for a, b in zip(one.forward_repeated(z, context, repeats),
                    each.forward_repeated(z, context, repeats), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_planar_and_radial_stacks_constrain_in_one_call_with_per_layer_state_dict():
    """The shipped planar stack takes the fast path; its keys are those of older
    checkpoints (one head per layer), so they load unchanged."""
    for name in ("planar", "radial"):
        one, each = pair(name, True)
        assert one.constrain_together, name
        assert list(one.state_dict()) == list(each.state_dict())
        assert "layers.2.params.head.weight" in one.state_dict()
        fresh = FlowSequence([make_flow(name, True, seed) for seed in range(3, 6)])
        fresh.load_state_dict(each.state_dict())
        z = torch.randn(BATCH, DIM, dtype=torch.float64)
        context = torch.randn(BATCH, CONTEXT, dtype=torch.float64)
        torch.testing.assert_close(fresh(z, context), each(z, context))


def test_one_head_names_a_missing_or_mismatched_context():
    one, _ = pair("planar", True)
    z = torch.randn(BATCH, DIM, dtype=torch.float64)
    with pytest.raises(ValueError, match="needs the encoder's context"):
        one(z, None)
    with pytest.raises(ValueError, match="context has 2 rows"):
        one(z, torch.randn(2, CONTEXT, dtype=torch.float64))
