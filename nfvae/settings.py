"""Typed views of the config groups a module is built from, parsed once at its edge.

Checkpoints keep the plain dicts (``torch.load(weights_only=True)`` reads them, and
``load_from_checkpoint`` rebuilds the module from them); a module parses them here
once, in its ``__init__``, and its code reads attributes (``settings.latent_dim``),
not dictionary keys. An unknown key is an error that names it, so a misspelt or moved
option fails at start instead of being ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from nfvae.objectives import Warmup

#: Keys that left the ``model`` group: old key -> where it lives now.
MOVED_MODEL_KEYS = {"num_samples": "objective.num_samples", "compile": "training.compile"}


def _fields(cls, group: str, values: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {group} setting(s) {', '.join(unknown)}; the {group} "
                         f"group takes {', '.join(sorted(names))}")
    return dict(values)


@dataclass(frozen=True)
class ModelSettings:
    """The ``model`` group: the architecture (encoder, decoder, likelihood, latent size)."""

    latent_dim: int
    encoder: dict[str, Any]
    decoder: dict[str, Any]
    likelihood: dict[str, Any]

    @classmethod
    def parse(cls, model: dict[str, Any]) -> tuple[ModelSettings, dict[str, Any]]:
        """The settings, and the training settings an old checkpoint kept in ``model``
        ({"num_samples": ..., "compile": ...}, see ``MOVED_MODEL_KEYS``)."""
        model = dict(model)
        moved = {k: model.pop(k) for k in MOVED_MODEL_KEYS if k in model}
        settings = cls(**_fields(cls, "model", model))
        if int(settings.latent_dim) < 1:
            raise ValueError(f"model.latent_dim must be >= 1, got {settings.latent_dim}")
        return dataclasses.replace(settings, latent_dim=int(settings.latent_dim)), moved


@dataclass(frozen=True)
class ObjectiveSettings:
    """The ``objective`` group of the VAE: the KL warm-up (in epochs) and the number of
    posterior samples per data point in the training loss."""

    beta_start: float = 1.0
    warmup_epochs: float = 0
    num_samples: int = 1
    warmup: Warmup = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if int(self.num_samples) < 1:
            raise ValueError(f"objective.num_samples must be >= 1, got {self.num_samples}")
        object.__setattr__(self, "warmup", Warmup(float(self.beta_start),
                                                  epochs=float(self.warmup_epochs)))

    @classmethod
    def parse(cls, objective: dict[str, Any] | None) -> ObjectiveSettings:
        return cls(**_fields(cls, "objective", objective or {}))
