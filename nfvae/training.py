"""train(cfg): fit a module from a composed config, then test its best checkpoint.

Evaluating a checkpoint afterwards is ``nfvae.tasks`` (eval.py, visualize.py)."""

from __future__ import annotations

import logging
import math
import warnings

import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from nfvae.checkpoints import (
    VALIDATION_KEY,
    check_compatible,
    checkpoint_step,
    read_checkpoint,
    resolve_resume,
)
from nfvae.eventfiles import drop_events_from
from nfvae.hparams import log_hparams
from nfvae.tasks.common import build_datamodule, check_output_dir
from nfvae.validation import validate

log = logging.getLogger(__name__)


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
            # checkpoint is logged below its step (figures included, nfvae.viz.loggers).
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
