"""Cross-cutting training policies as Lightning callbacks, one file each.

Every module built on ``nfvae.modules.TrainingModule`` gets ``NonFiniteGuard`` and
``ExactResumeRNG`` through ``configure_callbacks``, whatever ``callbacks=`` a run
composes; ``WarmupEarlyStopping`` is chosen in a config (``_target_``).
"""

from nfvae.callbacks.early_stopping import WarmupEarlyStopping
from nfvae.callbacks.nonfinite import NonFiniteGradientError, NonFiniteGuard, NonFiniteLossError
from nfvae.callbacks.rng import STATE_KEY, ExactResumeRNG, rng_state, set_rng_state

__all__ = ["STATE_KEY", "ExactResumeRNG", "NonFiniteGradientError", "NonFiniteGuard",
           "NonFiniteLossError", "WarmupEarlyStopping", "rng_state", "set_rng_state"]
