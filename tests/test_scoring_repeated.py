"""Importance sampling's fast path, ``forward_repeated(z, context, S)``: the same map,
log-det and gradients as ``forward(z, context repeated S times)`` for every family, and
the per-data-point work done once per data point (the context's first-layer term of the
network flows, the Sylvester matrices), not once per sample."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nfvae.flows import FLOW_FAMILIES, FlowSequence, NetworkFlow
from nfvae.flows.sylvester import SylvesterFlow
from tests.test_flows import BATCH, CONTEXT, DIM, FAMILIES, MODES, make_flow, make_stack

SHAPES = [pytest.param(1, BATCH, id="S1"), pytest.param(4, BATCH, id="S4"),
          pytest.param(4, 1, id="S4-B1")]
NETWORK = [n for n in FAMILIES if issubclass(FLOW_FAMILIES[n], NetworkFlow)]
SYLVESTER = [n for n in FAMILIES if issubclass(FLOW_FAMILIES[n], SylvesterFlow)]


def build(name: str, amortized: bool, kind: str) -> torch.nn.Module:
    """One layer with its parameters drawn large, or a stack of three (one head,
    alternating masks and orderings)."""
    return make_flow(name, amortized) if kind == "layer" else make_stack(name, amortized)


def outputs_and_gradients(flow, z, context, repeats: int | None):
    """(z_new, log_det, d/dz, d/dcontext, d/dparameters) of a random linear read-out;
    ``repeats`` None: the reference, forward on the context repeated S times."""
    z = z.clone().requires_grad_(True)
    context = context.clone().requires_grad_(True)
    samples = z.shape[0] // context.shape[0]
    if repeats is None:
        z_new, log_det = flow(z, context.repeat(samples, 1))
    else:
        z_new, log_det = flow.forward_repeated(z, context, repeats)
    gen = torch.Generator().manual_seed(1)
    read_z = torch.randn(z_new.shape, dtype=z_new.dtype, generator=gen)
    read_ld = torch.randn(log_det.shape, dtype=log_det.dtype, generator=gen)
    loss = (z_new * read_z).sum() + (log_det * read_ld).sum()
    inputs = [z, context, *flow.parameters()]
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [z_new, log_det, *(torch.zeros_like(i) if g is None else g
                              for i, g in zip(inputs, grads, strict=True))]


@pytest.mark.parametrize(("samples", "batch"), SHAPES)
@pytest.mark.parametrize("kind", ["layer", "stack"])
@pytest.mark.parametrize("amortized", MODES)
@pytest.mark.parametrize("name", FAMILIES)
def test_repeated_samples_match_a_repeated_context_with_gradients(name, amortized, kind,
                                                                   samples, batch):
    flow = build(name, amortized, kind)
    z = 2 * torch.randn(samples * batch, DIM, dtype=torch.float64)
    context = torch.randn(batch, CONTEXT, dtype=torch.float64)
    expected = outputs_and_gradients(flow, z, context, None)
    actual = outputs_and_gradients(flow, z, context, samples)
    labels = ["z_new", "log_det", "d/dz", "d/dcontext",
              *(f"d/d{n}" for n, _ in flow.named_parameters())]
    assert actual[0].shape == (samples * batch, DIM) and actual[1].shape == (samples * batch,)
    for label, a, e in zip(labels, actual, expected, strict=True):
        # 1e-10 of the tensor's scale: a stack's gradients reach 1e5, where summing the
        # context's terms once instead of S times moves the last digits (1e-8).
        scale = max(1.0, float(e.detach().abs().max()))
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10 * scale,
                                   msg=lambda m, label=label: f"{name} {kind}: {label}\n{m}")
    # The comparison means something: the read-out reaches z and, amortized, the context.
    assert actual[2].abs().sum() > 0
    if amortized:
        assert actual[3].abs().sum() > 0


def flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("name", NETWORK)
def test_network_flows_take_the_context_term_once_per_data_point(name):
    """The first layer's context product runs on B rows, not S*B: S - 1 of the S
    copies of 2 * B * H_context * width flops are saved in every layer."""
    samples, layers = 5, 3
    flow = make_stack(name, True, num_layers=layers)
    z = torch.randn(samples * BATCH, DIM, dtype=torch.float64)
    context = torch.randn(BATCH, CONTEXT, dtype=torch.float64)
    repeated = flops(lambda: flow(z, context.repeat(samples, 1)))
    once = flops(lambda: flow.forward_repeated(z, context, samples))
    width = 128  # the families' default first hidden width
    assert repeated - once == layers * (samples - 1) * BATCH * 2 * CONTEXT * width


@pytest.mark.parametrize("name", SYLVESTER)
def test_sylvester_matrices_are_not_copied_per_sample(name, monkeypatch):
    """Each layer's bijection receives its parameters with B rows for z of S*B rows."""
    samples = 5
    flow = make_stack(name, True)
    seen = []
    for layer in flow.layers:
        def spy(z, *, _inner=layer.bijection, **params):
            seen.append((z.shape[0], {k: v.shape[0] for k, v in params.items()
                                      if isinstance(v, torch.Tensor)}))
            return _inner(z, **params)
        monkeypatch.setattr(layer, "bijection", spy)
    z = torch.randn(samples * BATCH, DIM, dtype=torch.float64)
    flow.forward_repeated(z, torch.randn(BATCH, CONTEXT, dtype=torch.float64), samples)
    assert len(seen) == len(flow.layers)
    for rows, param_rows in seen:
        assert rows == samples * BATCH
        assert set(param_rows.values()) == {BATCH}, param_rows


@pytest.mark.parametrize("name", SYLVESTER)
def test_sylvester_layer_by_layer_takes_the_same_broadcast(name):
    """Without the one head (a mixed stack), each layer's forward_repeated broadcasts too
    and gives the one-head result."""
    flow = make_stack(name, True)
    each = FlowSequence(list(flow.layers), one_head=False)
    samples = 3
    z = torch.randn(samples * BATCH, DIM, dtype=torch.float64)
    context = torch.randn(BATCH, CONTEXT, dtype=torch.float64)
    for a, b in zip(flow.forward_repeated(z, context, samples),
                    each.forward_repeated(z, context, samples), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
