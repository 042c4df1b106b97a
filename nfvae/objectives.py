"""Training and evaluation objectives computed from ``ELBOTerms``.

negative ELBO = E_q[log q0(z0|x) - sum_k log|det J_k| - log p(x|zK) - log p(zK)]
importance-sampled log-likelihood: log p(x) ~ logsumexp_s(log w_s) - log S,
    log w_s = log p(x, zK_s) - log qK(zK_s|x)   (Burda et al. 2016's IWAE bound).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from nfvae.model import ELBOTerms, FlowVAE


@dataclass
class NegativeELBO:
    """Batch means: ``loss`` is recon + beta * kl (what is optimised); the rest is reported."""

    loss: Tensor
    neg_elbo: Tensor
    recon: Tensor
    kl: Tensor
    sum_log_det: Tensor

    def nonfinite_terms(self) -> list[str]:
        return [name for name, value in vars(self).items() if not torch.isfinite(value).all()]


def negative_elbo(terms: ELBOTerms, beta: float = 1.0) -> NegativeELBO:
    """Average over the S posterior samples and the batch."""
    recon = -terms.log_px.mean()
    kl = terms.kl.mean()
    return NegativeELBO(
        loss=recon + beta * kl,
        neg_elbo=recon + kl,
        recon=recon,
        kl=kl,
        sum_log_det=terms.sum_log_det.mean(),
    )


def kl_warmup_beta(beta_start: float, warmup_steps: float, steps_done: float) -> float:
    """Linear warm-up (annealing) of a loss weight: beta_start at step 0, rising linearly
    to 1 at ``warmup_steps`` and 1 from then on; no warm-up (``warmup_steps <= 0``) is 1.

    The one annealing function of every module; its unit is the optimizer step (the
    module's ``global_step``, which a resumed run restores). Configs that count the
    warm-up in epochs are converted with the steps per epoch (``Warmup``)."""
    if warmup_steps <= 0:
        return 1.0
    return beta_start + (1.0 - beta_start) * min(1.0, steps_done / warmup_steps)


@dataclass(frozen=True)
class Warmup:
    """A warm-up of ``beta_start`` -> 1 lasting ``steps`` optimizer steps or ``epochs``
    epochs (the VAE papers count epochs; the 2-D experiments, after Rezende & Mohamed
    2015, count steps). At most one of the two is non-zero."""

    beta_start: float = 1.0
    steps: float = 0
    epochs: float = 0

    def __post_init__(self) -> None:
        if not 0 <= self.beta_start <= 1:
            raise ValueError(f"beta_start must be in [0, 1], got {self.beta_start}")
        if self.steps < 0 or self.epochs < 0 or (self.steps and self.epochs):
            raise ValueError(f"a warm-up lasts steps >= 0 or epochs >= 0, not both; got "
                             f"steps={self.steps}, epochs={self.epochs}")

    def beta(self, global_step: int, steps_per_epoch: float = 1) -> float:
        return kl_warmup_beta(self.beta_start, self.steps or self.epochs * steps_per_epoch,
                              global_step)


def iwae_bound(log_weights: Tensor) -> Tensor:
    """log (1/S) sum_s exp(log_w_s) over dim 0: (S, B) -> (B,)."""
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


#: ``noise(start, count) -> eps (count, B, D)``: the standard-normal draws of samples
#: start .. start + count - 1 (``nfvae.evaluation.ExampleNoise`` fixes them per example).
NoiseSource = Callable[[int, int], Tensor]


#: Memory (MiB) one chunk of posterior samples may hold while scoring. Chunks that stay
#: near the CPU's caches score ~1.9x faster than 65536-sample ones (benchmarks/
#: bench_peers.py: 1000 MNIST images x 500 samples) and keep scoring off the peak RSS.
SCORING_CHUNK_MB = 32.0


def samples_per_chunk(model: FlowVAE, max_batch_mb: float = SCORING_CHUNK_MB) -> int:
    """Posterior samples whose decoder outputs and log-density temporaries (about
    num_params + 3 values per data dimension) fit in ``max_batch_mb`` MiB."""
    if max_batch_mb <= 0:
        raise ValueError(f"max_batch_mb must be > 0, got {max_batch_mb}")
    param = next(model.parameters(), None)
    itemsize = param.element_size() if param is not None else 4
    per_sample = itemsize * math.prod(model.data_shape) * (model.likelihood.num_params + 3)
    return max(1, int(max_batch_mb * 2**20) // per_sample)


@torch.no_grad()
def log_importance_weights(
    model: FlowVAE, x: Tensor, num_samples: int, max_batch_samples: int = 2**16,
    noise: NoiseSource | None = None, max_batch_mb: float = SCORING_CHUNK_MB,
) -> Tensor:
    """(S, B) log-weights, drawn in chunks so that at most ``max_batch_samples``
    posterior samples (S_chunk * B), and no more than fit in ``max_batch_mb`` MiB
    (``samples_per_chunk``), are held at once; fresh noise unless ``noise``."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    held = min(max_batch_samples, samples_per_chunk(model, max_batch_mb))
    chunk = max(1, min(num_samples, held // max(1, x.shape[0])))
    parts, done = [], 0
    while done < num_samples:
        s = min(chunk, num_samples - done)
        eps = None if noise is None else noise(done, s)
        parts.append(model(x, num_samples=s, eps=eps).log_weight)
        done += s
    return torch.cat(parts, dim=0)


def importance_log_likelihood(
    model: FlowVAE, x: Tensor, num_samples: int, max_batch_samples: int = 2**16,
    noise: NoiseSource | None = None,
) -> Tensor:
    """Importance-sampled estimate of log p(x), shape (B,)."""
    return iwae_bound(log_importance_weights(model, x, num_samples, max_batch_samples, noise))
