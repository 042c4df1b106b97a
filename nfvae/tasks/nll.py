"""``python eval.py ckpt_path=...`` (task=nll): test NLL of a checkpoint, the papers' protocol.

Each example's noise is fixed (``nfvae.evaluation``, seeded by the checkpoint's
``eval_noise_seed``), so with ``eval.num_samples`` equal to the run's
``test.num_samples`` this reproduces the run's test/nll, whatever the batch size
(null, the default, takes the model kind's ``EVAL_NUM_SAMPLES``: 5000 for a VAE, 1
for an image flow);
task=ood scores its in-distribution examples the same way.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig

from nfvae.module import FlowVAEModule
from nfvae.tasks.common import (
    check_output_dir,
    checkpoint_and_data,
    example_nlls,
    noise_seed,
    num_samples,
)
from nfvae.validation import validate

log = logging.getLogger(__name__)


@torch.no_grad()
def mean_neg_elbo(module: FlowVAEModule, x: torch.Tensor, batch_size: int) -> float:
    """Single-sample negative ELBO with fixed noise, averaged over ``x``."""
    total = 0.0
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size].to(module.device)
        index = torch.arange(start, start + len(batch))
        total += float(module.example_elbo(batch, index, noise_seed(module))["neg_elbo"]
                       .double().sum())
    return total / len(x)


@torch.no_grad()
def nll(cfg: DictConfig) -> dict[str, float]:
    """Mean NLL (nats and bits per dimension) of ``cfg.eval.split``, and the negative
    ELBO for a VAE; writes eval.json."""
    validate(cfg)
    torch.manual_seed(cfg.seed)
    module, datamodule = checkpoint_and_data(cfg)
    x, _ = datamodule.split(cfg.eval.split)
    results = {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "split": cfg.eval.split,
        "num_examples": len(x),
        "num_samples": num_samples(module, cfg.eval),
    }
    if isinstance(module, FlowVAEModule):  # a bound beside the estimate: VAEs only
        results["neg_elbo"] = mean_neg_elbo(module, x, int(cfg.eval.batch_size))
    mean_nll = float(example_nlls(module, x, cfg.eval).double().mean())
    results["nll"] = mean_nll
    results["bpd"] = mean_nll / (math.prod(datamodule.data_shape) * math.log(2))
    out_dir = check_output_dir(cfg.paths.output_dir)
    (out_dir / "eval.json").write_text(json.dumps(results, indent=2))
    log.info("wrote %s", out_dir / "eval.json")
    return results
