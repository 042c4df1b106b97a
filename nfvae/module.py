"""The LightningModule: optimisation, KL warm-up and logging around FlowVAE.

Nothing mathematical lives here: the model returns ``ELBOTerms`` and
``nfvae.objectives`` turns them into the loss and the reported figures.

Under DDP: validation and test figures are per-example values with fixed noise
(``nfvae.evaluation``) averaged by ``MeanMetric`` (sum and count reduced across
ranks), so they equal the single-process figures whatever the sharding; training
noise (dynamic binarization, posterior samples) differs per rank; the decision
to stop or skip on a non-finite loss or gradient is taken by all ranks together.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from torch import Tensor, nn
from torchmetrics import MeanMetric

from nfvae.checkpoints import apply_optimizer_settings, record_validation_metrics
from nfvae.config import to_plain
from nfvae.distributed import rank_and_world
from nfvae.errors import UserError
from nfvae.evaluation import example_elbo, example_nll
from nfvae.loading import MODULE_KEY, class_path
from nfvae.model import FlowVAE
from nfvae.objectives import kl_warmup_beta, negative_elbo

#: Checkpoint entry with what Lightning does not save itself (RNG states, counters).
STATE_KEY = "nfvae"


class NonFiniteLossError(UserError, FloatingPointError):
    """The training objective went NaN or infinite; raised before the optimizer step."""


class NonFiniteGradientError(FloatingPointError):
    """A gradient went NaN or infinite; raised before the optimizer step."""


def logger_writes_this_step(trainer: pl.Trainer) -> bool:
    """Whether Lightning sends this training step's logged values to the logger.

    Lightning's own decision, as its step-end logging (``update_train_step_metrics``)
    takes it, asked during the step: it follows ``trainer.log_every_n_steps`` on the
    count of steps Lightning logs by, which a resumed run restores. (A callback that
    sets ``trainer.should_stop`` after the step makes Lightning write that step too.)
    """
    return trainer._logger_connector.should_update_logs or bool(trainer.fast_dev_run)


def build_model(data_shape, model: dict, flow: dict, prior: dict | None = None) -> FlowVAE:
    """FlowVAE from the ``model``, ``flow`` and ``prior`` config groups (plain dicts with
    ``_target_``); no ``prior`` (checkpoints from before the group) is the standard normal."""
    return FlowVAE(
        data_shape=data_shape,
        latent_dim=int(model["latent_dim"]),
        encoder=instantiate(model["encoder"]),
        decoder=instantiate(model["decoder"]),
        flow=instantiate(flow),
        likelihood=instantiate(model["likelihood"]),
        prior=instantiate(prior) if prior else None,
    )


def rng_state() -> dict[str, Any]:
    """This process's global RNG states as tensors, ints and tuples (weights-only loadable)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _rank_seed(rank: int) -> int:
    """A seed per rank from the run's seed (the one ``seed_everything`` set on every rank)."""
    return (torch.initial_seed() * 1_000_003 + rank) % (2**63 - 1)


def _means(names) -> nn.ModuleDict:
    # float64 sums: a mean over 10^4 examples of ~1e2 nats keeps ~1e-12 relative error,
    # so the reduced DDP figure matches the single-process one to float32 rounding.
    return nn.ModuleDict(
        {name: MeanMetric(nan_strategy="disable").set_dtype(torch.float64) for name in names})


class FlowVAEModule(pl.LightningModule):
    """Trains a FlowVAE on the beta-weighted negative ELBO.

    Every argument is a plain, resolved config so that ``load_from_checkpoint``
    rebuilds the same model from the checkpoint alone. ``data`` is not used
    here; it is kept so ``eval.py`` can rebuild the dataset the model saw.
    """

    #: Arguments that checkpoints from before they existed lack, with the config that
    #: rebuilds those models (conf/prior/standard_normal.yaml), so such runs resume.
    IMPLIED_HPARAMS = {"prior": {"_target_": "nfvae.priors.standard_normal_prior",
                                 "_partial_": True, "name": "standard_normal"}}

    def __init__(
        self,
        data_shape: list[int],
        model: dict[str, Any],
        flow: dict[str, Any],
        optimizer: dict[str, Any],
        objective: dict[str, Any] | None = None,
        test_num_samples: int = 100,
        data: dict[str, Any] | None = None,
        skip_nonfinite: bool = False,
        eval_noise_seed: int = 0,
        scheduler: dict[str, Any] | None = None,
        prior: dict[str, Any] | None = None,
    ):
        super().__init__()
        # Plain containers, so checkpoints load with torch.load(weights_only=True).
        data_shape, model, flow, optimizer, objective, data, scheduler, prior = map(
            to_plain, (data_shape, model, flow, optimizer, objective, data, scheduler, prior))
        self.save_hyperparameters()
        self.model = build_model(tuple(data_shape), model, flow, prior)
        objective = objective or {}
        self.beta_start = float(objective.get("beta_start", 1.0))
        self.warmup_epochs = float(objective.get("warmup_epochs", 0))
        self.num_samples = int(model.get("num_samples", 1))
        if self.num_samples < 1:
            raise ValueError(f"model.num_samples must be >= 1, got {self.num_samples}")
        self.test_num_samples = test_num_samples
        self.num_data_dims = math.prod(data_shape)
        self.skip_nonfinite = bool(skip_nonfinite)
        self.eval_noise_seed = int(eval_noise_seed)
        self.val_means = _means(("neg_elbo", "recon", "kl"))
        self.test_means = _means(("neg_elbo", "nll", "bpd"))
        self.skipped_nonfinite = 0
        self._named_trainables: list[tuple[str, nn.Parameter]] | None = None
        self._nonfinite_loss: str | None = None
        self._resumed_rng: list[dict[str, Any]] | None = None
        compile_options = model.get("compile", False)
        if compile_options:
            # nn.Module.compile keeps the state_dict keys, so checkpoints of compiled
            # and plain runs are interchangeable.
            self.model.compile(**(compile_options if isinstance(compile_options, dict) else {}))

    # -- the Python API -------------------------------------------------------------
    def sample(self, num_samples: int) -> Tensor:
        return self.model.sample(num_samples)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.model.reconstruct(x.to(self.device))

    def log_likelihood(self, x: Tensor, num_samples: int = 5000) -> Tensor:
        """Importance-sampled log p(x) in nats, shape (B,): ``-example_nll`` with the
        examples numbered 0..B-1."""
        index = torch.arange(len(x))
        return -self.example_nll(x, index, num_samples, self.eval_noise_seed)

    def example_nll(self, x: Tensor, index: Tensor, num_samples: int, seed: int,
                    max_batch_samples: int = 2**16) -> Tensor:
        """Importance-sampled -log p(x) in nats per example, (B,), with the noise fixed
        by (index, seed): the one NLL path of eval tasks (``nfvae.evaluation``)."""
        return example_nll(self.model, x.to(self.device), index, num_samples, seed,
                           max_batch_samples)

    def example_elbo(self, x: Tensor, index: Tensor, seed: int) -> dict[str, Tensor]:
        """Single-sample {neg_elbo, recon, kl} per example, (B,), noise fixed by (index, seed)."""
        return example_elbo(self.model, x.to(self.device), index, seed)

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
        x = batch[0]
        beta = self.beta
        parts = negative_elbo(self.model(x, self.num_samples), beta)
        if not torch.isfinite(parts.loss):
            message = (
                f"non-finite training loss at global step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}); non-finite terms: "
                f"{', '.join(parts.nonfinite_terms())}; values: "
                + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in vars(parts).items()))
            if not self.skip_nonfinite and self.trainer.world_size == 1:
                raise NonFiniteLossError(message + _NONFINITE_ADVICE)
            # Skipping, or other ranks to agree with: backward still runs (DDP's
            # gradient all-reduce needs every rank) and on_before_optimizer_step decides.
            # The step still logs its (non-finite) figures: a step that logs nothing
            # makes Lightning repeat the previous step's values.
            self._nonfinite_loss = message
        # Only on the steps the logger writes: each self.log costs Lightning ~0.5 ms
        # (benchmarks/bench_logging.py). The progress bar shows every step's loss
        # itself (nfvae.progress.LiveLossProgressBar).
        if logger_writes_this_step(self.trainer):
            self.log("train/loss", parts.loss, prog_bar=True)
            self.log_dict({
                "train/neg_elbo": parts.neg_elbo,
                "train/recon": parts.recon,
                "train/kl": parts.kl,
                "train/sum_log_det": parts.sum_log_det,
                "train/beta": beta,
            })
            if self.skip_nonfinite:
                self.log("train/skipped_nonfinite", float(self.skipped_nonfinite))
        return parts.loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Stop, or skip the step, when the loss or a gradient is not finite.

        The gradients are already all-reduced here, and the loss flag is reduced
        too, so every rank takes the same decision. A skipped step leaves the
        parameters and the optimizer's moments untouched (no gradient, no update).
        """
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            return  # float16 loss scaling skips overflowing steps itself
        if self._named_trainables is None:  # walking the module tree each step costs 50 us
            self._named_trainables = [(n, p) for n, p in self.named_parameters()
                                      if p.requires_grad]
        grads = [(n, p.grad) for n, p in self._named_trainables if p.grad is not None]
        loss_message, self._nonfinite_loss = self._nonfinite_loss, None
        # A NaN or inf entry makes its tensor's sum non-finite, and sums cost a twentieth
        # of an entry-wise isfinite (160 us vs 3.5 ms per step for the MNIST benchmark
        # model); a sum that overflows from finite entries is settled entry-wise.
        finite = not grads or bool(torch.stack([g.sum() for _, g in grads]).isfinite().all())
        if not finite:
            finite = all(bool(g.isfinite().all()) for _, g in grads)
        bad = self.trainer.strategy.reduce_boolean_decision(
            loss_message is not None or not finite, all=False)
        if not bad:
            return
        if self.skip_nonfinite:
            # Logged (cumulative) with the next step's figures: a self.log here would
            # make Lightning repeat the previous step's train/loss at this step.
            optimizer.zero_grad(set_to_none=True)
            self.skipped_nonfinite += 1
            return
        if loss_message is not None:
            raise NonFiniteLossError(loss_message + _NONFINITE_ADVICE)
        names = [n for n, g in grads if not g.isfinite().all()]
        if not names:
            raise NonFiniteLossError(
                f"non-finite training loss or gradient on another rank at global step "
                f"{self.global_step} (epoch {self.current_epoch}); see that rank's log."
                + _NONFINITE_ADVICE)
        raise NonFiniteGradientError(
            f"non-finite gradient at global step {self.global_step} (epoch "
            f"{self.current_epoch}) in {len(names)} parameter(s): {', '.join(names[:10])}"
            + (", ..." if len(names) > 10 else "") + _NONFINITE_ADVICE)

    # -- evaluation: fixed noise per example, exact means across ranks --------------------
    @staticmethod
    def _batch_index(batch) -> Tensor:
        if len(batch) > 2:
            return batch[2]
        raise ValueError("evaluation batches must be (x, y, index) so each example's noise "
                         "is fixed (nfvae.data.IndexedTensors yields them)")

    def validation_step(self, batch, batch_idx: int) -> None:
        x = batch[0]
        values = example_elbo(self.model, x, self._batch_index(batch),
                              self.eval_noise_seed)
        for name, metric in self.val_means.items():
            metric.update(values[name])
            self.log(f"val/{name}", metric, on_step=False, on_epoch=True, batch_size=len(x))

    def test_step(self, batch, batch_idx: int) -> None:
        x = batch[0]
        index = self._batch_index(batch)
        values = {
            "neg_elbo": example_elbo(self.model, x, index, self.eval_noise_seed)["neg_elbo"],
            "nll": example_nll(self.model, x, index, self.test_num_samples, self.eval_noise_seed),
        }
        values["bpd"] = values["nll"] / (self.num_data_dims * math.log(2))
        for name, metric in self.test_means.items():
            metric.update(values[name])
            self.log(f"test/{name}", metric, on_step=False, on_epoch=True, batch_size=len(x))

    # -- state Lightning does not keep: RNG streams, counters --------------------------------
    def on_train_start(self) -> None:
        rank, world = rank_and_world()
        if self._resumed_rng:
            states, self._resumed_rng = self._resumed_rng, None
            if rank < len(states):
                set_rng_state(states[rank])
            else:  # more processes than when the checkpoint was saved: a fresh stream
                torch.manual_seed(_rank_seed(rank))
        elif world > 1:
            # The model was initialised identically on every rank; from here each rank
            # draws its own binarization and posterior noise.
            torch.manual_seed(_rank_seed(rank))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = [rng_state()]
        _, world = rank_and_world()
        if world > 1:
            # Every rank dumps the checkpoint (Lightning then writes rank 0's), so all
            # reach this collective; it keeps each rank's stream.
            states = [None] * world
            dist.all_gather_object(states, rng_state())
        checkpoint[STATE_KEY] = {"rng": states, "skipped_nonfinite": self.skipped_nonfinite}
        checkpoint[MODULE_KEY] = class_path(self)  # what nfvae.loading.load_module loads
        record_validation_metrics(self._trainer, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Before Lightning loads the optimizer state: the configured settings apply.
        apply_optimizer_settings(checkpoint, self.hparams.optimizer)
        state = checkpoint.get(STATE_KEY) or {}
        self._resumed_rng = state.get("rng")
        self.skipped_nonfinite = int(state.get("skipped_nonfinite", 0))

    def configure_optimizers(self):
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        settings = dict(self.hparams.get("scheduler") or {})
        if not settings:
            return optimizer
        # interval: "epoch" (stepped after each epoch) or "step"; the rest builds it.
        interval = settings.pop("interval", "epoch")
        scheduler = instantiate(settings)(optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": interval,
                                 "name": "train/lr"}}


_NONFINITE_ADVICE = (
    ". Checkpoints saved before this step are kept (ckpt_path=last resumes from the newest "
    "of them, passing over the diverged on_exception.ckpt); try a lower learning rate, "
    "trainer.detect_anomaly=true to find the operation, or training.skip_nonfinite=true "
    "to skip such batches.")
