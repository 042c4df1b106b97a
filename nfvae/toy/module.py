"""LightningModules that fit a flow from N(0, I) to a 2-D target, with no VAE around it.

* ``ReverseKLModule`` (energies, Rezende & Mohamed 2015, Sec. 6.1): samples
  z0 ~ N(0, I) pushed through the flow, zK = f(z0), log q(zK) = log N(z0) - sum log|det J|,

      loss = E_q[log q(zK) + U(zK)] = KL(q || p) - log Z,

  so KL(q || p) = loss + log Z with log Z of the target integrated on a grid.
* ``MaximumLikelihoodModule`` (sample targets): data x through the inverse,

      log q(x) = log N(f^{-1}(x)) + log|det d f^{-1}/dx|,   loss = -E_p[log q(x)],

  and KL(p || q) = E_p[log p(x) - log q(x)] with the target's exact density.
  It needs a family with a closed-form inverse (coupling, Glow, spline).

Both keep their configs as plain hyperparameters so ``load_from_checkpoint``
rebuilds them; the flow is global (``amortized: false``, there is no context).
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor

from nfvae.config import to_plain
from nfvae.distributions import FlowDistribution, StandardNormal
from nfvae.flows import (
    FLOW_FAMILIES,
    FlowSequence,
    initialize_by_inverse,
    uninitialized_actnorms,
)
from nfvae.logging_steps import logger_writes_this_step
from nfvae.modules import TrainingModule
from nfvae.objectives import Warmup
from nfvae.toy.targets import EnergyTarget, SampleTarget, Target


def invertible_families() -> list[str]:
    """Registered families with a closed-form inverse."""
    return sorted(name for name, family in FLOW_FAMILIES.items() if family.has_inverse)


class ToyDensityModule(TrainingModule):
    """A global flow from the standard normal base to ``target``; subclasses set the loss.

    The optimizer, resume handling and the non-finite guard (``skip_nonfinite``) come
    from ``TrainingModule``."""

    target_kind: type[Target] = Target

    def __init__(self, data_shape: list[int], target: dict[str, Any], flow: dict[str, Any],
                 optimizer: dict[str, Any], data: dict[str, Any] | None = None,
                 skip_nonfinite: bool = False):
        super().__init__()
        self.save_hyperparameters()
        # Plain containers (subclasses' raw Hydra configs included, which Lightning
        # reads from every __init__ frame), so checkpoints load with weights_only=True.
        for key in list(self.hparams):
            self.hparams[key] = to_plain(self.hparams[key])
        data_shape, target, flow = (self.hparams[k] for k in ("data_shape", "target", "flow"))
        if len(data_shape) != 1:
            raise ValueError(f"a density experiment needs flat points (D,), got {data_shape}")
        self.dim = int(data_shape[0])
        self.target = instantiate(target)
        if not isinstance(self.target, self.target_kind):
            raise TypeError(f"{type(self).__name__} needs a {self.target_kind.__name__}, got "
                            f"{type(self.target).__name__}")
        if self.target.dim != self.dim:
            raise ValueError(f"target {self.target.name} is {self.target.dim}-D but the data "
                             f"are {self.dim}-D")
        # q = N(0, I) pushed through the flow: one FlowDistribution holds the maths.
        self.density = FlowDistribution(
            StandardNormal(self.dim), instantiate(flow)(dim=self.dim, context_dim=None))
        self.flow_name = flow.get("name") or "flow"
        self.check_flow()
        self._register_load_state_dict_pre_hook(_rename_flow_keys)

    @property
    def flow(self) -> FlowSequence:
        return self.density.flow

    def check_flow(self) -> None:
        """Fail at construction if the flow cannot serve this objective."""

    # -- the model -----------------------------------------------------------------
    def base_log_prob(self, z: Tensor) -> Tensor:
        return self.density.base.log_prob(z)

    def push(self, z0: Tensor) -> tuple[Tensor, Tensor]:
        """zK = f(z0) and log q(zK) = log N(z0) - sum log|det J|."""
        return self.density.push(z0)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        z0 = torch.randn(num_samples, self.dim, generator=generator).to(self.device)
        return self.push(z0)[0]

    # -- the loop ------------------------------------------------------------------
    def losses(self, batch: Tensor) -> dict[str, Tensor]:
        """{"loss": the objective, "kl": its KL form, ...}: batch means."""
        raise NotImplementedError

    def training_step(self, batch, batch_idx: int) -> Tensor:
        values = self.losses(batch[0])
        self._last_values = values  # for the non-finite guard's message
        if logger_writes_this_step(self.trainer):
            self.log_dict({f"train/{k}": v for k, v in values.items()}, prog_bar=False)
        return values["loss"]

    def describe_nonfinite_loss(self) -> str:
        values = getattr(self, "_last_values", None) or {}
        return ("values: " + ", ".join(f"{k}={float(v):.4g}" for k, v in values.items())
                + "; fewer layers may help too")

    def _evaluate(self, batch, stage: str) -> None:
        x = batch[0]
        values = self.losses(x)
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, on_epoch=True,
                      sync_dist=True, batch_size=x.shape[0], prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")


class ReverseKLModule(ToyDensityModule):
    """Fit an energy exp(-U) by reverse KL; batches are base draws z0 ~ N(0, I)."""

    target_kind = EnergyTarget

    def __init__(self, data_shape: list[int], target: dict[str, Any], flow: dict[str, Any],
                 optimizer: dict[str, Any], data: dict[str, Any] | None = None,
                 beta_start: float = 1.0, anneal_steps: int = 0, skip_nonfinite: bool = False):
        super().__init__(data_shape, target, flow, optimizer, data, skip_nonfinite)
        if not 0 < beta_start <= 1 or anneal_steps < 0:
            raise ValueError(f"need 0 < beta_start <= 1 and anneal_steps >= 0, got "
                             f"{beta_start}, {anneal_steps}")
        # Counted in optimizer steps, as Rezende & Mohamed's schedule is.
        self.warmup = Warmup(float(beta_start), steps=int(anneal_steps))
        self.log_normalizer = float(self.target.log_normalizer)

    @property
    def beta(self) -> float:
        """Annealed inverse temperature of the training loss, E_q[log q + beta U]: rises
        linearly from beta_start to 1 over anneal_steps (Rezende & Mohamed 2015 use
        min(1, 0.01 + t / 10000)); a flat start lets q spread over every mode before
        reverse KL's mode seeking can lock onto one. Evaluation always uses beta = 1."""
        if not self.training:
            return 1.0
        return self.warmup.beta(self.global_step)

    def losses(self, z0: Tensor) -> dict[str, Tensor]:
        zK, log_q = self.push(z0)
        log_p = self.target.log_prob(zK)
        kl = (log_q - log_p).mean() + self.log_normalizer
        beta = self.beta
        if beta == 1.0:
            return {"loss": kl - self.log_normalizer, "kl": kl}
        loss = (log_q - beta * log_p).mean()
        return {"loss": loss, "kl": kl, "beta": torch.tensor(beta)}


class MaximumLikelihoodModule(ToyDensityModule):
    """Fit a sampled target by maximum likelihood through the flow's inverse."""

    target_kind = SampleTarget

    def check_flow(self) -> None:
        if not self.flow.has_inverse:
            raise ValueError(
                f"maximum-likelihood training needs a flow with a closed-form inverse, and "
                f"'{self.flow_name}' has none. Families with one: "
                f"{invertible_families() or 'none'} (flow=<name>)")

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Data-dependent initialisation (Glow's ActNorm) from the first training batch,
        # in the direction this objective runs the flow.
        if uninitialized_actnorms(self.flow):
            with torch.no_grad(), initialize_by_inverse(self.flow):
                self.log_prob(batch[0])

    def log_prob(self, x: Tensor) -> Tensor:
        """log q(x) = log N(f^{-1}(x)) + log|det d f^{-1}/dx|, shape (B,)."""
        return self.density.log_prob(x)

    def example_nll(self, x: Tensor, index: Tensor, num_samples: int, seed: int,
                    max_batch_samples: int = 0) -> Tensor:
        """-log q(x) per example, (B,): exact, so index, seed and samples do not matter."""
        return -self.log_prob(x.to(self.device))

    def losses(self, x: Tensor) -> dict[str, Tensor]:
        log_q = self.log_prob(x)
        nll = -log_q.mean()
        values = {"loss": nll, "nll": nll}
        if not self.training:  # the target's density costs more than the flow; report only
            values["kl"] = (self.target.log_prob(x) - log_q).mean()
        return values


def _rename_flow_keys(state_dict, prefix, *args) -> None:
    """Checkpoints written before the module held a FlowDistribution keep the flow's
    weights under ``flow.``; they now live under ``density.flow.``."""
    old = prefix + "flow."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[prefix + "density." + key[len(prefix):]] = state_dict.pop(key)
