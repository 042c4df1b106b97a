"""The LightningModule of image flows: maximum likelihood on dequantized 8-bit images.

For a batch of images x (levels n = round(255 x), see ``nfvae.image_flow.data``),

    v = (pad(n) + u) / K,  u ~ U[0, 1)^D,      log p(v) = MultiscaleFlow.log_prob(v),
    loss = bits/dim = (-log p(v) + D_model log K) / (D_data log 2),

every change of variables (logit or centring, squeezes, steps, split priors) counted
in log p(v). Validation and test use dequantization noise fixed per example
(``example_nll``), so their figures compare across epochs, runs and batch sizes.
ActNorm starts from the first training batch (data-dependent initialisation).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from nfvae.config import to_plain
from nfvae.flows import uninitialized_actnorms
from nfvae.flows.image import MultiscaleFlow
from nfvae.image_flow.data import (
    bits_per_dim,
    crop_images,
    example_uniform,
    image_levels,
    pad_images,
)
from nfvae.logging_steps import logger_writes_this_step
from nfvae.modules import TrainingModule


def _means(names) -> nn.ModuleDict:
    # float64 sums (sum and count reduced across ranks): the DDP figure equals the
    # single-process one.
    return nn.ModuleDict(
        {name: MeanMetric(nan_strategy="disable").set_dtype(torch.float64) for name in names})


class FlowDensityModule(TrainingModule):
    """Glow or RealNVP (``kind``) over a DataModule's images, trained on bits/dim.

    The architecture arguments are those of ``MultiscaleFlow``; ``pad_to`` [H, W]
    zero-pads the images where the levels' squeezes need it (MNIST 28 -> 32 for 3
    levels); ``num_levels`` is K of the discrete data (256: 8 bits);
    ``test_num_samples`` dequantization draws per test image (log-mean-exp, a
    tighter bound as it grows). Plain configs only, so ``load_from_checkpoint``
    rebuilds the model from the checkpoint alone; ``data`` is kept for eval.py.
    The optimizer, resumes (with each rank's RNG state, so a resumed run draws the
    dequantization noise the uninterrupted run would) and the non-finite guard come
    from ``TrainingModule``.
    """

    RESUME_SETTINGS = (*TrainingModule.RESUME_SETTINGS, "test_num_samples", "eval_noise_seed")
    #: Checkpoints from before the prior's bound existed hold Glow's unbounded prior;
    #: they load and resume as that (a config that bounds it is told it does not fit).
    IMPLIED_HPARAMS = {"prior_max_log_scale": None}
    # eval.py's default (eval.num_samples=null): one dequantization draw, the exact
    # density's bound that the run's test/bpd reports.
    EVAL_NUM_SAMPLES = 1

    def __init__(self, data_shape: list[int], optimizer: dict[str, Any], levels: int = 3,
                 steps_per_level: int = 8, hidden_channels: int = 128, kind: str = "glow",
                 coupling: str = "affine", permutation: str | None = None,
                 logit_alpha: float | None = None, max_log_scale: float = 3.0,
                 prior_max_log_scale: float | None = None, pad_to: list[int] | None = None,
                 num_levels: int = 256,
                 test_num_samples: int = 1, eval_noise_seed: int = 0,
                 data: dict[str, Any] | None = None, scheduler: dict[str, Any] | None = None,
                 skip_nonfinite: bool = False):
        super().__init__()
        data_shape, optimizer, pad_to, data, scheduler = map(
            to_plain, (data_shape, optimizer, pad_to, data, scheduler))
        self.save_hyperparameters()
        _check_data(data_shape, data, pad_to, num_levels, test_num_samples)
        self.data_shape = tuple(int(s) for s in data_shape)
        self.pad_to = None if pad_to is None else (int(pad_to[0]), int(pad_to[1]))
        model_shape = self.data_shape if self.pad_to is None else (self.data_shape[0],
                                                                   *self.pad_to)
        self.flow = MultiscaleFlow(model_shape, levels, steps_per_level, hidden_channels, kind,
                                   coupling, permutation, logit_alpha, max_log_scale,
                                   prior_max_log_scale)
        self.num_levels = int(num_levels)
        self.model_dims = math.prod(model_shape)
        self.data_dims = math.prod(self.data_shape)
        self.test_num_samples = int(test_num_samples)
        self.eval_noise_seed = int(eval_noise_seed)
        self.val_means = _means(("nll", "bpd"))
        self.test_means = _means(("nll", "bpd"))

    # -- the data path ------------------------------------------------------------------
    @property
    def model_shape(self) -> tuple[int, int, int]:
        return self.flow.image_shape

    def dequantize(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        """Images in [0, 1] (B, *data_shape) -> v = (pad(n) + u) / K (B, *model_shape);
        u: (B, *model_shape) in [0, 1), fresh uniform noise if None."""
        self._check_images(x)
        levels = pad_images(image_levels(x, self.num_levels), self.pad_to)
        if u is None:
            u = torch.rand_like(levels)
        return (levels + u) / self.num_levels

    def discrete_nll(self, log_pv: Tensor) -> Tensor:
        """-log p(v) + D_model log K: nats per image on the discrete data (an upper bound)."""
        return -log_pv + self.model_dims * math.log(self.num_levels)

    def bits_per_dim(self, nll: Tensor) -> Tensor:
        return bits_per_dim(nll, self.data_dims)

    def _check_images(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, self.data_shape))})"
                             f", got {tuple(x.shape)}")

    # -- the Python API -----------------------------------------------------------------
    def encode(self, v: Tensor) -> list[Tensor]:
        """Continuous images v (B, *data_shape) in [0, 1) -> per-level latents
        [eps_1, ..., eps_L] (padding, where configured, at the centre of level 0)."""
        self._check_images(v)
        return self.flow.encode(pad_images(v.to(self.device), self.pad_to,
                                           0.5 / self.num_levels))

    def decode(self, latents: list[Tensor]) -> Tensor:
        """The inverse of ``encode``: latents -> v (B, *data_shape)."""
        return crop_images(self.flow.decode(latents), self.data_shape[1:])

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """n images (n, *data_shape) in [0, 1] decoded from eps ~ N(0, T^2 I)."""
        latents = self.latent_noise(n, generator)
        return self.decode([temperature * eps for eps in latents]).clamp(0, 1)

    def latent_noise(self, n: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """Standard-normal latents for n images, drawn on the CPU (so ``generator``
        fixes them whatever the device) and moved to the model."""
        return [torch.randn((n, *shape), generator=generator).to(self.device)
                for shape in self.flow.latent_shapes]

    @torch.no_grad()
    def log_prob(self, x: Tensor, num_samples: int = 1) -> Tensor:
        """log P(x) in nats per image (B,) of images in [0, 1] on the 8-bit grid: the
        dequantization bound with ``num_samples`` fresh draws (log-mean-exp)."""
        x = x.to(self.device)
        log_pv = torch.stack([self.flow.log_prob(self.dequantize(x)) for _ in range(num_samples)])
        return -self.discrete_nll(torch.logsumexp(log_pv, 0) - math.log(num_samples))

    @torch.no_grad()
    def example_nll(self, x: Tensor, index: Tensor, num_samples: int = 1, seed: int = 0,
                    max_batch_samples: int | None = None) -> Tensor:
        """-log P(x) in nats per image (B,), exact given the dequantization draws, which
        are fixed by (seed, index, draw): -log mean_s p(v_s) + D_model log K.

        ``num_samples``: dequantization draws (the exact density needs no importance
        sampling; more draws tighten the bound). The draws run one batch at a time, so
        ``max_batch_samples`` (the VAE's memory bound, same signature) is not needed."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        x = x.to(self.device)
        log_pv = torch.stack([
            self.flow.log_prob(self.dequantize(x, example_uniform(
                index, self.model_shape, seed, draw).to(x.device, x.dtype)))
            for draw in range(num_samples)])
        return self.discrete_nll(torch.logsumexp(log_pv, 0) - math.log(num_samples))

    # -- training -----------------------------------------------------------------------
    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # ActNorm's data-dependent start, from the first training batch (the sanity
        # check's validation before it leaves the flow untouched).
        if uninitialized_actnorms(self.flow):
            self.flow.initialize(self.dequantize(batch[0]))

    def training_step(self, batch, batch_idx: int) -> Tensor:
        nll = self.discrete_nll(self.flow.log_prob(self.dequantize(batch[0])))
        loss = self.bits_per_dim(nll).mean()
        if logger_writes_this_step(self.trainer):
            self.log("train/loss", loss, prog_bar=True)
            self.log("train/bpd", loss)
        return loss

    def _evaluate(self, batch, means: nn.ModuleDict, stage: str, num_samples: int) -> None:
        x, index = batch[0], _batch_index(batch)
        nll = self.example_nll(x, index, num_samples, self.eval_noise_seed)
        for name, value in (("nll", nll), ("bpd", self.bits_per_dim(nll))):
            means[name].update(value)
            self.log(f"{stage}/{name}", means[name], on_step=False, on_epoch=True,
                     batch_size=len(x), prog_bar=stage == "val" and name == "bpd")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_means, "val", 1)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_means, "test", self.test_num_samples)

    def describe_nonfinite_loss(self) -> str:
        return ("the batch's bits/dim (module.max_log_scale bounds the coupling scales, "
                "module.prior_max_log_scale the split and top priors' scales; "
                "trainer.gradient_clip_val bounds the steps)")


def _batch_index(batch) -> Tensor:
    if len(batch) > 2:
        return batch[2]
    raise ValueError("evaluation batches must be (x, y, index) so each example's "
                     "dequantization noise is fixed (nfvae.data.IndexedTensors yields them)")


def _check_data(data_shape, data, pad_to, num_levels, test_num_samples) -> None:
    if len(data_shape) != 3:
        raise ValueError(f"image flows need images (C, H, W), got data shape {data_shape}")
    binarize = (data or {}).get("binarize", "none")
    if binarize != "none":
        raise ValueError(f"image flows model grey levels, but data.binarize={binarize}: "
                         "set data.binarize=none")
    if pad_to is not None and (len(pad_to) != 2 or pad_to[0] < data_shape[1]
                               or pad_to[1] < data_shape[2]):
        raise ValueError(f"module.pad_to must be [H, W] at least the images' "
                         f"{list(data_shape[1:])}, got {pad_to}")
    if num_levels < 2:
        raise ValueError(f"module.num_levels must be >= 2, got {num_levels}")
    if test_num_samples < 1:
        raise ValueError(f"module.test_num_samples must be >= 1, got {test_num_samples}")
