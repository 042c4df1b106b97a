"""Building stacks: layer indices for alternating families, mixed stacks from conf/."""

from __future__ import annotations

import inspect
from functools import partial

import pytest
import torch
from hydra.utils import instantiate

from nfvae.flows import (
    FLOW_FAMILIES,
    AffineCouplingFlow,
    FlowSequence,
    IAFFlow,
    OrthogonalSylvesterFlow,
    PlanarFlow,
    TriangularSylvesterFlow,
    mixed,
    stack,
)


@pytest.mark.parametrize("name", sorted(FLOW_FAMILIES))
def test_families_declare_alternation_exactly_when_they_take_a_layer_index(name):
    family = FLOW_FAMILIES[name]
    takes_index = "layer_index" in inspect.signature(family).parameters
    assert family.alternates == takes_index


def test_stack_passes_layer_index_only_to_families_that_take_it():
    seq = stack(dim=4, context_dim=3, family=AffineCouplingFlow, num_layers=3)
    assert [layer.split.swap for layer in seq.layers] == [False, True, False]
    seq = stack(dim=4, context_dim=3, family=TriangularSylvesterFlow, num_layers=2)
    assert [layer.reverse for layer in seq.layers] == [False, True]
    # As Hydra passes it: a partial of the class, with the family's own options.
    seq = stack(dim=4, context_dim=3, family=partial(IAFFlow, hidden_dims=[8]), num_layers=2)
    assert seq.layers[1].order.tolist() == [3, 2, 1, 0]

    def custom(dim, context_dim=None, amortized=True):  # a user's family without the option
        return PlanarFlow(dim, context_dim, amortized)

    assert len(stack(dim=4, context_dim=3, family=custom, num_layers=2)) == 2


def build(overrides, compose_cfg, dim=6, context_dim=5) -> FlowSequence:
    cfg = compose_cfg(["flow=mixed", *overrides])
    return instantiate(cfg.flow)(dim=dim, context_dim=context_dim)


def test_mixed_stack_repeats_the_pattern_with_each_family_alternating(compose_cfg):
    seq = build(["flow.layers=[iaf,realnvp,sylvester_orthogonal]", "flow.num_layers=2",
                 "flow.families.sylvester_orthogonal.family.num_ortho_vecs=3"], compose_cfg)
    kinds = [type(layer) for layer in seq.layers]
    assert kinds == [IAFFlow, AffineCouplingFlow, OrthogonalSylvesterFlow] * 2
    assert seq.layers[0].order.tolist() == list(range(6))
    assert seq.layers[3].order.tolist() == list(reversed(range(6)))
    assert [seq.layers[1].split.swap, seq.layers[4].split.swap] == [False, True]
    assert seq.layers[2].num_vecs == 3  # the family's own option, overridden in place
    z, context = torch.randn(4, 6), torch.randn(4, 5)
    zK, sum_log_det = seq(z, context)
    assert zK.shape == (4, 6) and torch.isfinite(sum_log_det).all()


def test_mixed_amortized_setting_applies_to_every_family(compose_cfg):
    seq = build(["flow.layers=[planar,realnvp]", "flow.amortized=false"], compose_cfg)
    assert all(not layer.amortized for layer in seq.layers)
    zK, _ = seq(torch.randn(3, 6), None)
    assert zK.shape == (3, 6)


def test_mixed_stack_names_unknown_families():
    with pytest.raises(ValueError, match=r"unknown families \['nope'\]; known: \['planar'\]"):
        mixed(dim=2, layers=["planar", "nope"], families={"planar": stack})
    with pytest.raises(ValueError, match="list of family names"):
        mixed(dim=2, layers="planar", families={"planar": stack})
