"""A stack that mixes families: a pattern of family names, repeated.

    python train.py flow=mixed 'flow.layers=[sylvester_orthogonal,realnvp]' flow.num_layers=4

builds sylvester_orthogonal, realnvp, sylvester_orthogonal, realnvp, ... (the
pattern repeated ``num_layers`` times). Each name refers to an entry of
``families``: the family's own stack config (conf/flow/<name>.yaml, composed
into conf/flow/mixed.yaml), so its options are set in one place and can be
overridden as ``flow.families.<name>.family.<option>=...``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from nfvae.flows.base import Flow, FlowSequence


def mixed(
    dim: int,
    context_dim: int | None = None,
    layers: Sequence[str] = (),
    families: Mapping[str, Callable[..., FlowSequence]] | None = None,
    num_layers: int = 1,
    amortized: bool | None = None,
    name: str | None = None,
) -> FlowSequence:
    """``layers`` repeated ``num_layers`` times; ``amortized`` (if set) applies to all.

    Each family's stack is built once with as many layers as the pattern uses,
    so families that alternate between layers (coupling masks, MADE orderings)
    alternate over their own occurrences.
    """
    families = dict(families or {})
    if num_layers < 0:
        raise ValueError(f"flow.num_layers must be >= 0, got {num_layers}")
    if isinstance(layers, str):
        raise ValueError(f"flow.layers must be a list of family names, got the string {layers!r}")
    unknown = [n for n in layers if n not in families]
    if unknown:
        raise ValueError(f"flow.layers names unknown families {unknown}; "
                         f"known: {sorted(families)}")
    pattern = list(layers) * num_layers
    override = {} if amortized is None else {"amortized": amortized}
    built = {
        family: iter(families[family](dim=dim, context_dim=context_dim, num_layers=count,
                                      **override).layers)
        for family, count in Counter(pattern).items()
    }
    flows: list[Flow] = [next(built[family]) for family in pattern]
    return FlowSequence(flows)
