"""The LightningModule: optimisation, KL warm-up and logging around FlowVAE.

Nothing mathematical lives here: the model returns ``ELBOTerms`` and
``nfvae.objectives`` turns them into the loss and the reported figures.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor

from nfvae.model import FlowVAE
from nfvae.objectives import importance_log_likelihood, kl_warmup_beta, negative_elbo


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


class NonFiniteLossError(FloatingPointError):
    """The training objective went NaN or infinite; raised before the optimizer step."""


def build_model(data_shape, model: dict, flow: dict) -> FlowVAE:
    """FlowVAE from the ``model`` and ``flow`` config groups (plain dicts with ``_target_``)."""
    return FlowVAE(
        data_shape=data_shape,
        latent_dim=int(model["latent_dim"]),
        encoder=instantiate(model["encoder"]),
        decoder=instantiate(model["decoder"]),
        flow=instantiate(flow),
        likelihood=instantiate(model["likelihood"]),
    )


class FlowVAEModule(pl.LightningModule):
    """Trains a FlowVAE on the beta-weighted negative ELBO.

    Every argument is a plain, resolved config so that ``load_from_checkpoint``
    rebuilds the same model from the checkpoint alone. ``data`` is not used
    here; it is kept so ``eval.py`` can rebuild the dataset the model saw.
    """

    def __init__(
        self,
        data_shape: list[int],
        model: dict[str, Any],
        flow: dict[str, Any],
        optimizer: dict[str, Any],
        objective: dict[str, Any] | None = None,
        test_num_samples: int = 100,
        data: dict[str, Any] | None = None,
    ):
        super().__init__()
        # Plain containers, so checkpoints load with torch.load(weights_only=True).
        data_shape, model, flow, optimizer, objective, data = map(
            _plain, (data_shape, model, flow, optimizer, objective, data))
        self.save_hyperparameters()
        self.model = build_model(tuple(data_shape), model, flow)
        objective = objective or {}
        self.beta_start = float(objective.get("beta_start", 1.0))
        self.warmup_epochs = float(objective.get("warmup_epochs", 0))
        self.num_samples = int(model.get("num_samples", 1))
        if self.num_samples < 1:
            raise ValueError(f"model.num_samples must be >= 1, got {self.num_samples}")
        self.test_num_samples = test_num_samples
        self.num_data_dims = math.prod(data_shape)

    # -- the Python API -------------------------------------------------------------
    def sample(self, num_samples: int) -> Tensor:
        return self.model.sample(num_samples)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.model.reconstruct(x.to(self.device))

    def log_likelihood(self, x: Tensor, num_samples: int = 5000) -> Tensor:
        """Importance-sampled log p(x) in nats, shape (B,)."""
        return importance_log_likelihood(self.model, x.to(self.device), num_samples)

    # -- training ---------------------------------------------------------------------
    @property
    def beta(self) -> float:
        """KL weight; rises per step, so it follows from the (restored) global step."""
        if self._trainer is None:
            return 1.0
        batches = self.trainer.num_training_batches
        steps_per_epoch = batches if math.isfinite(batches) and batches > 0 else 1
        return kl_warmup_beta(self.beta_start, self.warmup_epochs,
                              self.global_step / steps_per_epoch)

    def forward(self, x: Tensor, num_samples: int = 1):
        return self.model(x, num_samples=num_samples)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, _ = batch
        beta = self.beta
        parts = negative_elbo(self.model(x, self.num_samples), beta)
        if not torch.isfinite(parts.loss):
            raise NonFiniteLossError(
                f"non-finite training loss at global step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}); non-finite terms: "
                f"{', '.join(parts.nonfinite_terms())}; values: "
                + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in vars(parts).items())
                + ". The last good checkpoint is kept; try a lower learning rate or "
                "trainer.detect_anomaly=true to find the operation."
            )
        # self.log costs tens of microseconds per call: only build the dict on
        # the steps the logger actually writes.
        if self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self.log("train/loss", parts.loss, prog_bar=True)
            self.log_dict({
                "train/neg_elbo": parts.neg_elbo,
                "train/recon": parts.recon,
                "train/kl": parts.kl,
                "train/sum_log_det": parts.sum_log_det,
                "train/beta": beta,
            })
        return parts.loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, _ = batch
        parts = negative_elbo(self.model(x), 1.0)
        self.log_dict(
            {"val/neg_elbo": parts.neg_elbo, "val/recon": parts.recon, "val/kl": parts.kl},
            on_epoch=True, sync_dist=True, batch_size=x.shape[0], prog_bar=False,
        )

    def test_step(self, batch, batch_idx: int) -> None:
        x, _ = batch
        parts = negative_elbo(self.model(x), 1.0)
        nll = -importance_log_likelihood(self.model, x, self.test_num_samples).mean()
        self.log_dict(
            {
                "test/neg_elbo": parts.neg_elbo,
                "test/nll": nll,
                "test/bpd": nll / (self.num_data_dims * math.log(2)),
            },
            on_epoch=True, sync_dist=True, batch_size=x.shape[0],
        )

    def configure_optimizers(self):
        return instantiate(self.hparams.optimizer)(params=self.parameters())
