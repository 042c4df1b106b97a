"""What the tasks share: a usable run folder, a loaded data module, a checkpoint and
the data it is scored on, and the fixed-noise NLL of a set of examples."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor

from nfvae.data import TensorDataModule
from nfvae.errors import UserError
from nfvae.loading import load_module


class OutputDirError(UserError, OSError):
    """The run folder cannot be written, or its disk is nearly full."""


def check_output_dir(path: str | os.PathLike, min_free_mb: float = 0) -> Path:
    """Fail at start, not after an hour of training, if the run folder is unusable:
    not creatable, not writable, or on a disk with less than ``min_free_mb`` MiB free."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise OutputDirError(f"cannot write to the output directory {path}: {error}") from error
    free_mb = shutil.disk_usage(path).free / 2**20
    if free_mb < min_free_mb:
        raise OutputDirError(
            f"only {free_mb:.0f} MiB free on the disk holding the output directory {path}; "
            f"checkpoints and event files need at least {min_free_mb:g} MiB "
            "(training.min_free_mb); free some space or point hydra.run.dir elsewhere")
    return path


def build_datamodule(data_cfg) -> TensorDataModule:
    """The DataModule of a ``data`` config, its tensors loaded (a missing dataset fails
    here, before a Trainer or a model is built)."""
    datamodule = instantiate(data_cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def checkpoint_and_data(cfg: DictConfig, need_data: bool = True
                        ) -> tuple[pl.LightningModule, TensorDataModule | None]:
    """``cfg.ckpt_path``'s module (any kind, in eval mode) and the DataModule to score
    it on: ``cfg.data`` if given, else the data config the checkpoint recorded."""
    module = load_module(cfg.ckpt_path)
    data_cfg = cfg.get("data") or module.hparams.get("data")
    if data_cfg is None:
        if need_data:
            raise ValueError("the checkpoint records no data config; pass data=<name>")
        return module, None
    return module, build_datamodule(data_cfg)


def noise_seed(module: pl.LightningModule) -> int:
    """The seed of the module's per-example evaluation noise (the one its test/nll used)."""
    return int(getattr(module, "eval_noise_seed", 0))


def num_samples(module: pl.LightningModule, settings: Any) -> int:
    """``eval.num_samples``, or when null the model kind's own ``EVAL_NUM_SAMPLES``:
    5000 importance samples for a VAE (the papers' protocol), 1 dequantization draw
    for an image flow (its density is exact; more draws only tighten the bound)."""
    chosen = settings.get("num_samples") if hasattr(settings, "get") else settings.num_samples
    if chosen is None:
        chosen = getattr(module, "EVAL_NUM_SAMPLES", 1)
    if int(chosen) < 1:
        raise ValueError(f"eval.num_samples must be >= 1 (or null: the model kind's "
                         f"default), got {chosen}")
    return int(chosen)


@torch.no_grad()
def example_nlls(module: pl.LightningModule, x: Tensor, settings: Any) -> Tensor:
    """-log p(x) in nats per example, (N,), through the module's one fixed-noise path
    (``example_nll``): example i of ``x`` gets the same noise in every task.

    ``settings``: the ``eval`` config (num_samples, batch_size, max_batch_samples).
    """
    samples, batch_size = num_samples(module, settings), int(settings.batch_size)
    seed = noise_seed(module)
    parts = []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size].to(module.device)
        index = torch.arange(start, start + len(batch))
        parts.append(module.example_nll(batch, index, samples, seed,
                                        max_batch_samples=int(settings.max_batch_samples)).cpu())
    return torch.cat(parts) if parts else torch.empty(0)
