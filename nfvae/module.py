"""The VAE's LightningModule: KL warm-up, logging and evaluation around FlowVAE.

Nothing mathematical lives here: the model returns ``ELBOTerms`` and
``nfvae.objectives`` turns them into the loss and the reported figures. The optimizer,
resume handling, the non-finite guard and exact-resume RNG state are shared by every
module (``nfvae.modules.TrainingModule``, ``nfvae.callbacks``).

Under DDP: validation and test figures are per-example values with fixed noise
(``nfvae.evaluation``) averaged by ``MeanMetric`` (sum and count reduced across
ranks), so they equal the single-process figures whatever the sharding; training
noise (dynamic binarization, posterior samples) differs per rank.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torchmetrics import MeanMetric

from nfvae.compiling import CompileSettings, TrainingForward, remaining_training_steps
from nfvae.config import to_plain
from nfvae.evaluation import example_elbo, example_nll
from nfvae.logging_steps import logger_writes_this_step
from nfvae.model import FlowVAE
from nfvae.modules import TrainingModule
from nfvae.objectives import NegativeELBO, negative_elbo
from nfvae.settings import MOVED_MODEL_KEYS, ModelSettings, ObjectiveSettings


def build_model(data_shape, model: ModelSettings, flow: dict, prior: dict | None = None
                ) -> FlowVAE:
    """FlowVAE from the parsed ``model`` group and the ``flow`` and ``prior`` groups
    (``_target_`` dicts); no ``prior`` (checkpoints from before the group) is the
    standard normal."""
    return FlowVAE(
        data_shape=data_shape,
        latent_dim=model.latent_dim,
        encoder=instantiate(model.encoder),
        decoder=instantiate(model.decoder),
        flow=instantiate(flow),
        likelihood=instantiate(model.likelihood),
        prior=instantiate(prior) if prior else None,
    )


# Checkpoint key: was the training step compiled when the checkpoint was written?
COMPILED_KEY = "nfvae_training_compiled"


def _means(names) -> nn.ModuleDict:
    # float64 sums: a mean over 10^4 examples of ~1e2 nats keeps ~1e-12 relative error,
    # so the reduced DDP figure matches the single-process one to float32 rounding.
    return nn.ModuleDict(
        {name: MeanMetric(nan_strategy="disable").set_dtype(torch.float64) for name in names})


class FlowVAEModule(TrainingModule):
    """Trains a FlowVAE on the beta-weighted negative ELBO.

    Every argument is a plain, resolved config so that ``load_from_checkpoint``
    rebuilds the same model from the checkpoint alone; ``model`` and ``objective`` are
    parsed once into ``self.settings`` and ``self.objective``. ``data`` is not used
    here; it is kept so ``eval.py`` can rebuild the dataset the model saw. ``compile``
    (``training.compile``): auto, true, false or a dict of ``torch.compile`` options, for
    the training forward only (``nfvae.compiling``).
    Checkpoints from before ``num_samples`` and ``compile`` left the ``model`` group
    load as they are (their values apply where they now live).
    """

    #: Arguments that checkpoints from before they existed lack, with the config that
    #: rebuilds those models (conf/prior/standard_normal.yaml), so such runs resume.
    IMPLIED_HPARAMS = {"prior": {"_target_": "nfvae.priors.standard_normal_prior",
                                 "_partial_": True, "name": "standard_normal"}}
    # eval.py's default (eval.num_samples=null): the papers' 5000 importance samples.
    EVAL_NUM_SAMPLES = 5000
    RESUME_SETTINGS: ClassVar[tuple[str, ...]] = (
        *TrainingModule.RESUME_SETTINGS, "objective", "test_num_samples", "eval_noise_seed",
        "compile", *(f"model.{key}" for key in MOVED_MODEL_KEYS))

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
        compile: bool | str | dict[str, Any] = False,  # noqa: A002 - the config's name
        prior: dict[str, Any] | None = None,
    ):
        super().__init__()
        # Plain containers, so checkpoints load with torch.load(weights_only=True).
        data_shape, model, flow, optimizer, objective, data, scheduler, compile, prior = map(
            to_plain,
            (data_shape, model, flow, optimizer, objective, data, scheduler, compile, prior))
        # conf/train.yaml keeps the moved keys as null placeholders (a value there is
        # refused by nfvae.validation, naming the new key); they are no architecture.
        model = {k: v for k, v in model.items() if not (k in MOVED_MODEL_KEYS and v is None)}
        self.save_hyperparameters()
        self.settings, moved = ModelSettings.parse(model)
        objective = dict(objective or {})
        if "num_samples" in moved:  # a checkpoint from before objective.num_samples
            objective.setdefault("num_samples", moved["num_samples"])
        compile = compile or moved.get("compile", False)
        self.objective = ObjectiveSettings.parse(objective)
        self.model = build_model(tuple(data_shape), self.settings, flow, prior)
        self.test_num_samples = test_num_samples
        self.num_data_dims = math.prod(data_shape)
        self.eval_noise_seed = int(eval_noise_seed)
        self.val_means = _means(("neg_elbo", "recon", "kl"))
        self.test_means = _means(("neg_elbo", "nll", "bpd"))
        self._last_parts: NegativeELBO | None = None
        # The model itself stays eager (evaluation, figures, scoring, and checkpoints
        # keep their keys); training calls it through this, compiled or not.
        self._resumed_compiled = False
        self.training_forward = TrainingForward(
            self.model, CompileSettings.parse(compile),
            key={"data_shape": data_shape, "model": model, "flow": flow, "prior": prior})

    @property
    def num_samples(self) -> int:
        return self.objective.num_samples

    @property
    def warmup_epochs(self) -> float:
        return self.objective.warmup_epochs

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
        return self.objective.warmup.beta(self.global_step, self.steps_per_epoch)

    def forward(self, x: Tensor, num_samples: int = 1):
        return self.model(x, num_samples=num_samples)

    def on_train_start(self) -> None:
        trainer = self.trainer
        remaining = remaining_training_steps(
            trainer.max_epochs, trainer.max_steps, trainer.num_training_batches,
            trainer.current_epoch, trainer.global_step, trainer.accumulate_grad_batches)
        self.training_forward.start(
            remaining, self.device.type, trainer.strategy.broadcast,
            graph={"precision": str(trainer.precision)},
            resumed_compiled=self._resumed_compiled)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[COMPILED_KEY] = self.training_forward.is_compiled

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._resumed_compiled = bool(checkpoint.get(COMPILED_KEY, False))

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x = batch[0]
        beta = self.beta
        parts = negative_elbo(self.training_forward(x, self.objective.num_samples), beta)
        # For the non-finite guard's message (nfvae.callbacks.NonFiniteGuard).
        self._last_parts = parts
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
        return parts.loss

    def describe_nonfinite_loss(self) -> str:
        parts = self._last_parts
        if parts is None:
            return ""
        return (f"non-finite terms: {', '.join(parts.nonfinite_terms())}; values: "
                + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in vars(parts).items()))

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

