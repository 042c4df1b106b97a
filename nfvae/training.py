"""train(cfg) and evaluate(cfg): plain functions that train.py, eval.py and tests call."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nfvae.data import TensorDataModule
from nfvae.module import FlowVAEModule
from nfvae.objectives import importance_log_likelihood, negative_elbo

log = logging.getLogger(__name__)


def _plain(node) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def check_output_dir(path: str | os.PathLike) -> Path:
    """Fail at start, not after an hour of training, if the run folder is unusable."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise OSError(f"cannot write to the output directory {path}: {error}") from error
    return path


def build_datamodule(data_cfg) -> TensorDataModule:
    datamodule = instantiate(data_cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")  # load now: a missing dataset fails before the Trainer starts
    return datamodule


def build_module(cfg: DictConfig, data_shape) -> pl.LightningModule:
    """The LightningModule of ``cfg.module``; the data's shape is known only at run time."""
    return instantiate(cfg.module, data_shape=list(data_shape))


def _flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """Scalars of the config under dotted keys, for TensorBoard's HParams tab."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, (list, tuple)):
            flat[prefix] = str(node)
        elif node is None or isinstance(node, (bool, int, float, str)):
            flat[prefix] = "None" if node is None else node

    keys = ("data", "model", "flow", "optimizer", "objective", "seed")
    walk("", {k: _plain(cfg[k]) for k in keys if k in cfg})
    return flat


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns the final metrics."""
    check_output_dir(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg, datamodule.data_shape)
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

    if cfg.test.enabled and not trainer.fast_dev_run:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        metrics.update({k: float(v) for k, v in results[0].items()})

    if trainer.logger is not None and trainer.is_global_zero:
        final = {f"hp/{k.replace('/', '_')}": v for k, v in metrics.items()
                 if k.startswith(("val/", "test/")) and math.isfinite(v)}
        trainer.logger.log_hyperparams(_flat_hparams(cfg), final)
        trainer.logger.save()
    return metrics


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> FlowVAEModule:
    """Load a trained FlowVAEModule with a clear error for a missing or broken file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return FlowVAEModule.load_from_checkpoint(path, map_location=map_location,
                                                  weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the file named
        raise RuntimeError(
            f"could not load checkpoint {path}: {type(error).__name__}: {error}"
        ) from error


@torch.no_grad()
def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test negative ELBO and importance-sampled NLL of a checkpoint; writes JSON."""
    torch.manual_seed(cfg.seed)
    module = load_checkpoint(cfg.ckpt_path)
    module.eval()
    data_cfg = cfg.get("data") or module.hparams.data
    if data_cfg is None:
        raise ValueError("the checkpoint records no data config; pass data=<name>")
    datamodule = build_datamodule(data_cfg)
    x_test, _ = datamodule.split(cfg.eval.split)
    num_samples = int(cfg.eval.num_samples)
    neg_elbo_sum = nll_sum = 0.0
    model = module.model
    for start in range(0, len(x_test), int(cfg.eval.batch_size)):
        x = x_test[start:start + int(cfg.eval.batch_size)]
        neg_elbo_sum += float(negative_elbo(model(x), 1.0).neg_elbo) * len(x)
        log_px = importance_log_likelihood(model, x, num_samples,
                                           int(cfg.eval.max_batch_samples))
        nll_sum -= float(log_px.sum())
    n = len(x_test)
    dims = math.prod(datamodule.data_shape)
    results = {
        "checkpoint": str(cfg.ckpt_path),
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
