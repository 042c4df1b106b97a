"""The flow interface shared by every family, parameter sources, and FlowSequence.

Every flow maps in the sampling direction z0 -> zK:

    forward(z (B, D), context (B, H) or None) -> (z_new (B, D), log_det (B,))

where ``log_det`` is log|det dz_new/dz| per example. A family declares the
shapes of its raw, unconstrained parameters, maps them to the parameters of an
invertible map (``constrain``) and applies that map (``bijection``); where the raw
parameters come from (a linear head on the encoder's context, or one learned set
shared by all data points) is the job of a ``ParameterSource``. One code path
serves amortized and global flows.

``forward_repeated(z, context, repeats)`` is the same map for ``repeats`` posterior
samples per data point (z is (S*B, D), sample-major, context (B, H)): importance
sampling draws thousands per image, and a flow whose parameters depend on the
context alone computes them once per image there instead of once per sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class InverseNotAvailable(NotImplementedError):
    """Raised by flows whose inverse has no closed form (planar, radial, ...)."""


class Flow(nn.Module):
    """Base class: an invertible map z -> z_new with its log-determinant."""

    dim: int
    #: Whether ``inverse`` is available in closed form. Declared by each family, so code
    #: that needs an inverse (density evaluation, maximum likelihood, drawing densities
    #: through the inverse) reads it instead of calling ``inverse`` to find out.
    has_inverse: bool = False
    #: Whether consecutive layers of the family differ (coupling masks, MADE orderings,
    #: T-SNF's permutation): such a family takes ``layer_index`` = 0, 1, 2, ... when stacked.
    alternates: bool = False
    #: Whether ``constrain`` acts on the trailing (parameter) dimensions only, so that a
    #: stack of layers of the family is constrained in one call on (B, K, *shape)
    #: tensors (``FlowSequence``'s one head) instead of K calls.
    constrain_stacks: bool = False

    def check_z(self, z: Tensor) -> None:
        """Fail early, naming the expected shape, for z that is not (B, dim)."""
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} expects z of shape (B, {self.dim}), got {tuple(z.shape)}"
            )

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """zK -> z0 and log|det dz0/dzK|; families without a closed form raise."""
        raise InverseNotAvailable(f"{type(self).__name__} has no closed-form inverse")

    def forward_repeated(self, z: Tensor, context: Tensor | None,
                         repeats: int) -> tuple[Tensor, Tensor]:
        """``forward`` for z (S*B, D) holding ``repeats`` = S samples per context row:
        row s*B + b belongs to context row b. Here the context is simply repeated;
        flows that can share work across a data point's samples override this."""
        if repeats == 1 or context is None:
            return self(z, context)
        rows_per_sample(z, context, repeats)
        return self(z, context.repeat(repeats, 1))


def rows_per_sample(z: Tensor, context: Tensor | None, repeats: int) -> int:
    """B for z of S*B rows; checks that S*B matches the context's B rows."""
    if repeats < 1 or z.shape[0] % repeats:
        raise ValueError(f"z has {z.shape[0]} rows, not a multiple of repeats={repeats}")
    rows = z.shape[0] // repeats
    if context is not None and context.shape[0] != rows:
        raise ValueError(f"z has {z.shape[0]} rows = {repeats} samples x {rows}, but the "
                         f"context has {context.shape[0]} rows")
    return rows


def repeat_rows(t: Tensor | None, repeats: int) -> Tensor | None:
    """(B, ...) -> (S*B, ...), sample-major like z; None (a parameter a family lacks) stays."""
    if t is None or repeats == 1:
        return t
    return t.repeat(repeats, *(1,) * (t.dim() - 1))


class ParameterSource(nn.Module):
    """Produces a dict of raw parameters, each of shape (B, *shape)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        super().__init__()
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}
        self.sizes = [math.prod(shape) for shape in self.shapes.values()]

    def unpack(self, flat: Tensor) -> dict[str, Tensor]:
        """(B, sum of sizes) -> {name: (B, *shape)}."""
        chunks = flat.split(self.sizes, dim=-1)
        return {
            name: chunk.reshape(flat.shape[0], *shape)
            for (name, shape), chunk in zip(self.shapes.items(), chunks, strict=True)
        }


class AmortizedParameters(ParameterSource):
    """Per-example parameters from a linear head on the encoder's context (B, H).

    Rezende & Mohamed (2015) and van den Berg et al. (2018) amortize the flow
    this way. The head's width is derived from the declared shapes.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], context_dim: int):
        super().__init__(shapes)
        if context_dim < 1:
            raise ValueError(f"an amortized flow needs context_dim >= 1, got {context_dim}")
        self.head = nn.Linear(context_dim, sum(self.sizes))

    def forward(self, context: Tensor | None, batch_size: int) -> dict[str, Tensor]:
        if context is None:
            raise ValueError("an amortized flow needs the encoder's context, got None")
        if context.shape[0] != batch_size:
            raise ValueError(
                f"context has batch size {context.shape[0]} but z has {batch_size}"
            )
        return self.unpack(self.head(context))


class GlobalParameters(ParameterSource):
    """One learned set of parameters shared by every data point (normflows, pyro)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], init_scale: float):
        super().__init__(shapes)
        self.flat = nn.Parameter(torch.empty(sum(self.sizes)).uniform_(-init_scale, init_scale))

    def forward(self, context: Tensor | None, batch_size: int) -> dict[str, Tensor]:
        return self.unpack(self.flat.unsqueeze(0).expand(batch_size, -1))


class ParametrizedFlow(Flow):
    """A flow whose bijection takes its parameters from a ParameterSource.

    Subclasses implement ``param_shapes(dim)`` (or pass ``shapes``),
    ``constrain(**raw)`` (optional: raw values -> the parameters of an invertible
    map; everything that depends on the parameters alone belongs here, so it is
    computed once per data point, not per posterior sample) and
    ``bijection(z, **params)``. Any raw values, whatever produced them, give a
    valid flow; ``transform(z, **raw)`` runs both stages.
    """

    #: Whether ``bijection`` takes parameters of B rows for z of S*B rows (row s*B + b
    #: uses parameter row b), so that ``forward_repeated`` hands them over unrepeated
    #: instead of copying them S times.
    samples_broadcast: bool = False

    def __init__(
        self,
        dim: int,
        context_dim: int | None = None,
        amortized: bool = True,
        shapes: dict[str, tuple[int, ...]] | None = None,
    ):
        super().__init__()
        if dim < 1:
            raise ValueError(f"flow dimension must be >= 1, got {dim}")
        self.dim = dim
        self.amortized = amortized
        # Families whose shapes depend on options (Sylvester's M) pass them in.
        shapes = self.param_shapes(dim) if shapes is None else shapes
        if amortized:
            if context_dim is None:
                raise ValueError(f"{type(self).__name__}: amortized=true needs a context_dim")
            self.params = AmortizedParameters(shapes, context_dim)
        else:
            self.params = GlobalParameters(shapes, init_scale=1.0 / math.sqrt(dim))

    @staticmethod
    def param_shapes(dim: int) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def constrain(self, **raw: Tensor) -> dict[str, Tensor | None]:
        """Raw per-example parameters -> those ``bijection`` takes (default: as they are)."""
        return raw

    def bijection(self, z: Tensor, **params: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def transform(self, z: Tensor, **raw: Tensor) -> tuple[Tensor, Tensor]:
        """The map and log-det for raw parameter values (B, *shape)."""
        return self.bijection(z, **self.constrain(**raw))

    def constrained_parameters(self, context: Tensor | None, rows: int) -> dict[str, Tensor]:
        return self.constrain(**self.params(context, rows))

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_z(z)
        return self.bijection(z, **self.constrained_parameters(context, z.shape[0]))

    def forward_repeated(self, z: Tensor, context: Tensor | None,
                         repeats: int) -> tuple[Tensor, Tensor]:
        if repeats == 1:
            return self(z, context)
        self.check_z(z)
        params = self.constrained_parameters(context, rows_per_sample(z, context, repeats))
        if self.samples_broadcast:
            return self.bijection(z, **params)
        return self.bijection(z, **{k: repeat_rows(v, repeats) for k, v in params.items()})


class NetworkFlow(Flow):
    """A flow with networks of its own (coupling, MADE, spline conditioners).

    Amortized: the conditioner takes the encoder's context (B, H) as an extra
    input beside z. Global: the conditioner sees z only, and any context passed
    in is ignored, so every data point shares one map.
    """

    def __init__(self, dim: int, context_dim: int | None = None, amortized: bool = True):
        super().__init__()
        if dim < 1:
            raise ValueError(f"flow dimension must be >= 1, got {dim}")
        if amortized and (context_dim is None or context_dim < 1):
            raise ValueError(
                f"{type(self).__name__}: amortized=true needs a context_dim >= 1, got {context_dim}"
            )
        self.dim = dim
        self.amortized = amortized
        self.context_dim = context_dim if amortized else None

    def conditioner_context(self, z: Tensor, context: Tensor | None,
                            repeats: int = 1) -> Tensor | None:
        """Check z (S*B, D), S = ``repeats``, and context (B, H); the context the
        conditioner sees (None when global)."""
        self.check_z(z)
        if not self.amortized:
            return None
        if context is None:
            raise ValueError(f"{type(self).__name__}: an amortized flow needs the encoder's "
                             "context, got None")
        rows = rows_per_sample(z, context if context.dim() == 2 else None, repeats)
        if context.dim() != 2 or context.shape != (rows, self.context_dim):
            raise ValueError(
                f"{type(self).__name__}: context must have shape (B, {self.context_dim}) = "
                f"({rows}, {self.context_dim}), got {tuple(context.shape)}"
            )
        return context


class FlowSequence(Flow):
    """Composition f_K o ... o f_1 returning zK and the summed log-det.

    When every layer takes its parameters from a ParameterSource of one kind (all
    amortized or all global), the forward direction computes them for the whole stack
    at once: one GEMM from the context to every layer's raw parameters (the layers'
    heads concatenated; global: their vectors), and, for a family whose ``constrain``
    stacks (``Flow.constrain_stacks``), one constraint call on (B, K, *shape) instead of
    K. The layers keep their own heads, so the state_dict (and every checkpoint) is the
    same as layer by layer; ``one_head=False`` runs layer by layer.
    """

    def __init__(self, layers: Sequence[Flow], one_head: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.one_head = one_head and _one_source_kind(self.layers)
        first = self.layers[0] if self.layers else None
        self.constrain_together = self.one_head and first.constrain_stacks and all(
            type(layer) is type(first) and layer.params.shapes == first.params.shapes
            for layer in self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def has_inverse(self) -> bool:  # type: ignore[override]
        """A composition inverts when every layer does (the empty one, the identity, does)."""
        return all(layer.has_inverse for layer in self.layers)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._cascade(z, context)[:2]

    def forward_repeated(self, z: Tensor, context: Tensor | None,
                         repeats: int) -> tuple[Tensor, Tensor]:
        return self._cascade(z, context, repeats=repeats)[:2]

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._cascade(z, context, inverse=True)[:2]

    def trajectory(
        self, z: Tensor, context: Tensor | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """[z0, z1, ..., zK] and the per-layer log-dets [ld_1, ..., ld_K], for plots."""
        return self._cascade(z, context, keep_trajectory=True)[2:]

    def stacked_parameters(self, context: Tensor | None, z: Tensor,
                           repeats: int = 1) -> list[dict[str, Tensor | None]]:
        """Every layer's constrained parameters for z (S*B, D), S = ``repeats``, from one
        GEMM (amortized) or one concatenated vector (global); rows as z's."""
        sources = [layer.params for layer in self.layers]
        if self.layers[0].amortized:
            rows = rows_per_sample(z, context, repeats)
            if context is None:
                raise ValueError("an amortized flow needs the encoder's context, got None")
            flat = F.linear(context, torch.cat([s.head.weight for s in sources]),
                            torch.cat([s.head.bias for s in sources]))
        else:
            # Global: computed once (1 row) and expanded, not once per data point.
            rows, repeats = z.shape[0], 1
            flat = torch.cat([s.flat for s in sources]).unsqueeze(0)
        if self.constrain_together:
            first = self.layers[0]
            stacked = flat.view(flat.shape[0], len(sources), -1)
            raw = {name: chunk.reshape(*stacked.shape[:2], *shape) for (name, shape), chunk
                   in zip(first.params.shapes.items(), stacked.split(first.params.sizes, -1),
                          strict=True)}
            together = first.constrain(**raw)
            params = [{k: None if v is None else v[:, i].expand(rows, *v.shape[2:])
                       for k, v in together.items()} for i in range(len(sources))]
        else:
            chunks = flat.split([sum(s.sizes) for s in sources], dim=-1)
            params = [layer.constrain(**layer.params.unpack(chunk.expand(
                          rows if flat.shape[0] == 1 else flat.shape[0], -1)))
                      for layer, chunk in zip(self.layers, chunks, strict=True)]
        return [p if layer.samples_broadcast else {k: repeat_rows(v, repeats) for k, v in p.items()}
                for layer, p in zip(self.layers, params, strict=True)]

    def _cascade(self, z: Tensor, context: Tensor | None, repeats: int = 1,
                 inverse: bool = False, keep_trajectory: bool = False
                 ) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
        """The one loop over the layers, in either direction: (z, sum_log_det, points, log_dets)."""
        sum_log_det = z.new_zeros(z.shape[0])
        points, log_dets = [z], []
        stacked = None
        if self.one_head and not inverse:
            self.layers[0].check_z(z)
            stacked = self.stacked_parameters(context, z, repeats)
        for k, layer in enumerate(reversed(self.layers) if inverse else self.layers):
            if inverse:
                z, log_det = layer.inverse(z, context)
            elif stacked is not None:
                z, log_det = layer.bijection(z, **stacked[k])
            else:
                z, log_det = layer.forward_repeated(z, context, repeats)
            sum_log_det = sum_log_det + log_det
            if keep_trajectory:
                points.append(z)
                log_dets.append(log_det)
        return z, sum_log_det, points, log_dets


def _one_source_kind(layers: Sequence[Flow]) -> bool:
    """Whether every layer is a ParametrizedFlow with a plain amortized head, or every
    layer one with a plain global vector (subclassed sources keep their own way)."""
    kinds = {type(layer.params) if isinstance(layer, ParametrizedFlow) else None
             for layer in layers}
    return len(kinds) == 1 and kinds <= {AmortizedParameters, GlobalParameters}


def _alternates(family: Callable[..., Flow]) -> bool:
    # Hydra hands the family over as a functools.partial of the class.
    return bool(getattr(getattr(family, "func", family), "alternates", False))


def build_layers(
    family: Callable[..., Flow],
    dim: int,
    context_dim: int | None,
    amortized: bool,
    num_layers: int,
) -> list[Flow]:
    """``num_layers`` layers of one family.

    Families that alternate between layers (``Flow.alternates``: coupling masks, MADE
    orderings, T-SNF's permutation) receive ``layer_index`` = 0, 1, 2, ...; the rest
    are built as ``family(dim, context_dim, amortized)``.
    """
    index = _alternates(family)
    return [
        family(dim=dim, context_dim=context_dim, amortized=amortized,
               **({"layer_index": k} if index else {}))
        for k in range(num_layers)
    ]


def stack(
    dim: int,
    context_dim: int | None = None,
    family: Callable[..., Flow] | None = None,
    num_layers: int = 0,
    amortized: bool = True,
    name: str | None = None,
) -> FlowSequence:
    """Build K layers of one family; ``family=None`` with K=0 is the plain VAE.

    ``family`` is a partial from Hydra (``_partial_: true``); ``dim`` and
    ``context_dim`` are only known at run time and are filled in here.
    """
    if num_layers < 0:
        raise ValueError(f"flow.num_layers must be >= 0, got {num_layers}")
    if family is None:
        if num_layers > 0:
            raise ValueError(f"flow '{name}' has no family but num_layers={num_layers}")
        return FlowSequence([])
    return FlowSequence(build_layers(family, dim, context_dim, amortized, num_layers))
