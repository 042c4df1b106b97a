"""The thresholds every check is held to; ``diagnose.*`` in conf/ overrides them."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Thresholds:
    #: A latent unit is active when Cov_x(E_q[u|x]) exceeds this (Burda et al. 2016, 5.2).
    active_unit: float = 0.01
    #: Posterior collapse is reported when fewer than this fraction of units are active.
    min_active_fraction: float = 0.5
    #: A flow layer is idle when the spread (std over data) of its log-det and its mean
    #: displacement |z_k - z_{k-1}|, in units of the posterior's scale, both stay below these.
    idle_log_det_std: float = 0.01
    idle_displacement: float = 0.01
    #: The whole flow contributes when removing it (same weights) costs at least this
    #: many nats of -ELBO per example.
    flow_gain_nats: float = 0.1
    #: A mode is dropped when the model puts less than this fraction of the target's
    #: mass on it (over-represented above the inverse).
    mode_mass_fraction: float = 0.2
    #: A 2-D model is still diffuse when the share of its mass where the target has almost
    #: none exceeds the target's own share (1%) by more than this.
    off_target_mass: float = 0.1
    #: Training has stalled when the best val/neg_elbo of the last ``stall_epochs``
    #: epochs (after warm-up) is not ``stall_min_delta`` nats below the best before them.
    stall_epochs: int = 10
    stall_min_delta: float = 0.1
    #: Overfitting: over the last ``overfit_epochs`` epochs validation rose by more than
    #: ``overfit_min_rise`` nats while training fell.
    overfit_epochs: int = 5
    overfit_min_rise: float = 0.5
    #: A gradient-norm spike: a logged train/grad_norm more than ``grad_spike_factor``
    #: times the median of the ``grad_spike_window`` values logged before it.
    grad_spike_factor: float = 10.0
    grad_spike_window: int = 20
    #: Image models: a class is missing from the samples when its share among them is
    #: below this fraction of its share among the validation images (over-represented
    #: above the inverse); ``class_samples`` samples are classified (0: no class check).
    class_mass_fraction: float = 0.2
    class_samples: int = 1000

    @classmethod
    def from_config(cls, options: dict[str, Any] | None) -> Thresholds:
        """From ``diagnose.*``, naming any key that is not a threshold."""
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown diagnose option(s) {unknown}; known: {sorted(known)}")
        return cls(**options)
