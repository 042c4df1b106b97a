"""train(cfg) and evaluate(cfg): plain functions that train.py, eval.py and tests call."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from nfvae.checkpoints import (
    VALIDATION_KEY,
    CheckpointError,
    check_compatible,
    checkpoint_step,
    read_checkpoint,
    resolve_resume,
)
from nfvae.data import TensorDataModule
from nfvae.eventfiles import drop_events_from
from nfvae.evaluation import example_elbo, example_nll
from nfvae.hparams import log_hparams
from nfvae.module import FlowVAEModule
from nfvae.validation import validate

log = logging.getLogger(__name__)


class OutputDirError(OSError):
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
    datamodule = instantiate(data_cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")  # load now: a missing dataset fails before the Trainer starts
    return datamodule


def build_module(cfg: DictConfig, data_shape) -> pl.LightningModule:
    """The LightningModule of ``cfg.module``; the data's shape is known only at run time."""
    return instantiate(cfg.module, data_shape=list(data_shape))


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (or resume, see ``nfvae.checkpoints``), then test the best checkpoint;
    returns the final metrics."""
    validate(cfg)  # before anything is built: a bad value costs no data loading
    settings = cfg.get("training") or {}
    run_dir = check_output_dir(cfg.paths.output_dir, float(settings.get("min_free_mb", 0)))
    resume = resolve_resume(cfg.get("ckpt_path"), run_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg, datamodule.data_shape)
    logger_options = {}
    restored_validation: dict[str, float] = {}
    if resume is not None:
        checkpoint = read_checkpoint(resume)
        # Before Lightning copies tensors: a wrong flow or latent size is named here.
        check_compatible(checkpoint, module, resume)
        log.info("resuming from %s (global step %d)", resume, checkpoint_step(checkpoint))
        restored_validation = dict(checkpoint.get(VALIDATION_KEY) or {})
        if cfg.get("logger") and issubclass(get_class(cfg.logger._target_), TensorBoardLogger):
            # What the interrupted run logged from its checkpoint's step on (a kill
            # leaves such steps behind) is logged again from here: hidden in TensorBoard,
            # and removed from the files (nfvae.eventfiles). Everything up to the
            # checkpoint is logged below its step (figures included, nfvae.viz.callbacks).
            logger_options["purge_step"] = checkpoint_step(checkpoint)
    logger = instantiate(cfg.logger, **logger_options) if cfg.get("logger") else False
    if "purge_step" in logger_options and rank_zero_only.rank == 0:
        # Before the logger's first write: raw readers then see each step once too.
        drop_events_from(logger.log_dir, logger_options["purge_step"])
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)

    with warnings.catch_warnings():
        # resolve_resume has decided: None is a fresh run in a folder without checkpoints.
        # Lightning would still call None "last" (an OnExceptionCheckpoint is configured),
        # find nothing and warn twice about it.
        warnings.filterwarnings("ignore", message=r"`\.fit\(ckpt_path=None\)` was called")
        warnings.filterwarnings("ignore", message=r'\.fit\(ckpt_path="last"\) is set, but')
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    # A resumed run whose training had ended validates nothing: its checkpoint's figures.
    metrics = {**restored_validation, **metrics}

    if cfg.test.enabled and not trainer.fast_dev_run:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        # Not printed by Lightning (stdout only): logged, so the run's log keeps it.
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None,
                               weights_only=True, verbose=False)
        metrics.update({k: float(v) for k, v in results[0].items()})
        if trainer.is_global_zero:
            log.info("test metrics of %s:\n%s", best or "the last weights",
                     metrics_table({k: float(v) for k, v in results[0].items()}))

    if trainer.logger is not None and trainer.is_global_zero:
        final = {k: v for k, v in metrics.items()
                 if k.startswith(("val/", "test/")) and math.isfinite(v)}
        log_hparams(trainer.logger, cfg, final)
        trainer.logger.save()
    return metrics


def metrics_table(metrics: dict[str, float]) -> str:
    """Metric names and values as an aligned two-column text table."""
    width = max([len("metric"), *map(len, metrics)])
    rows = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 12}"]
    rows += [f"{name:<{width}}  {value:.6g}" for name, value in sorted(metrics.items())]
    return "\n".join(rows)


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> FlowVAEModule:
    """A trained FlowVAEModule from its checkpoint alone (weights-only), with a clear
    error for a missing, truncated or foreign file."""
    checkpoint = read_checkpoint(path)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    # Evaluation does not need the training run's torch.compile (older checkpoints
    # kept the option in the model group).
    if "compile" in hparams:
        hparams["compile"] = False
    if isinstance(hparams.get("model"), dict) and "compile" in hparams["model"]:
        hparams["model"] = {**hparams["model"], "compile": False}
    try:
        module = FlowVAEModule(**hparams)
    except (TypeError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"could not load checkpoint {path}: its hyper_parameters do not describe a "
            f"FlowVAEModule ({type(error).__name__}: {error})") from error
    check_compatible(checkpoint, module, path)
    module.load_state_dict(checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    return module.to(map_location)


def checkpoint_and_data(cfg: DictConfig) -> tuple[FlowVAEModule, Any]:
    """``cfg.ckpt_path``'s module in eval mode, and the data config to score it on:
    ``cfg.data`` if given, else the one the checkpoint recorded."""
    module = load_checkpoint(cfg.ckpt_path)
    module.eval()
    data_cfg = cfg.get("data") or module.hparams.data
    if data_cfg is None:
        raise ValueError("the checkpoint records no data config; pass data=<name>")
    return module, data_cfg


@torch.no_grad()
def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test negative ELBO and importance-sampled NLL of a checkpoint; writes JSON.

    Each example's noise is fixed (``nfvae.evaluation``, seeded by the checkpoint's
    ``eval_noise_seed``), so with ``eval.num_samples`` equal to the run's
    ``test.num_samples`` this reproduces the run's test/nll, whatever the batch size.
    """
    validate(cfg)
    torch.manual_seed(cfg.seed)
    module, data_cfg = checkpoint_and_data(cfg)
    datamodule = build_datamodule(data_cfg)
    x_test, _ = datamodule.split(cfg.eval.split)
    num_samples = int(cfg.eval.num_samples)
    batch_size = int(cfg.eval.batch_size)
    seed = module.eval_noise_seed
    neg_elbo_sum = nll_sum = 0.0
    model = module.model
    for start in range(0, len(x_test), batch_size):
        x = x_test[start:start + batch_size]
        index = torch.arange(start, start + len(x))
        neg_elbo_sum += float(example_elbo(model, x, index, seed)["neg_elbo"].double().sum())
        nll_sum += float(example_nll(model, x, index, num_samples, seed,
                                     int(cfg.eval.max_batch_samples)).double().sum())
    n = len(x_test)
    dims = math.prod(datamodule.data_shape)
    results = {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "split": cfg.eval.split,
        "num_examples": n,
        "num_samples": num_samples,
        "neg_elbo": neg_elbo_sum / n,
        "nll": nll_sum / n,
        "bpd": nll_sum / n / (dims * math.log(2)),
    }
    out_dir = check_output_dir(cfg.paths.output_dir)
    (out_dir / "eval.json").write_text(json.dumps(results, indent=2))
    log.info("wrote %s", out_dir / "eval.json")
    return results
