"""Deterministic evaluation: posterior noise fixed per example, and the per-example
figures that validation, test and ``eval.py`` share.

A Monte-Carlo figure averaged over a data set is only comparable across runs,
batch sizes and numbers of processes if each example always gets the same noise.
Here the noise of example ``i`` (its index in the split) is drawn from its own
seeded generator, so

    eps[s, i] = block (s // K) of N(0, I) drawn with seed h(seed, i, s // K),

depends only on ``(seed, i, s)`` and the block size ``K = min(S, NOISE_BLOCK)``,
never on which batch, rank or device the example lands on. The importance-sampled
log-likelihood (Burda et al. 2016),

    log p(x_i) ~ logsumexp_s log w_s - log S,   log w_s = log p(x_i, zK_s) - log qK(zK_s | x_i),

is then a fixed function of the weights, and a data-set mean of such per-example
values reduced as (sum, count) across ranks equals the single-process mean.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nfvae.model import FlowVAE
from nfvae.objectives import importance_log_likelihood

#: Samples drawn per generator stream; the noise of S samples is ceil(S / K) streams.
NOISE_BLOCK = 100
# Odd multipliers that keep (seed, example, block) -> generator seed one-to-one for
# examples < 1e6 and blocks < 1e6 (Python ints do not overflow; the result is reduced
# to the 63 bits a torch generator seed takes).
_EXAMPLE_STRIDE = 1_000_003
_SEED_STRIDE = 1_000_033


def stream_seed(seed: int, example: int, block: int) -> int:
    return ((seed * _SEED_STRIDE + example) * _EXAMPLE_STRIDE + block) % (2**63 - 1)


class ExampleNoise:
    """Standard-normal noise fixed per example: ``noise(start, count) -> (count, B, D)``.

    ``index``: (B,) the examples' indices in their split; ``block``: samples per
    stream (use ``block_size(S)`` so the noise depends on S only). Drawn on the CPU
    and moved, so CPU and GPU runs see the same numbers.
    """

    def __init__(self, index: Tensor, dim: int, seed: int = 0, block: int = NOISE_BLOCK,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.index = [int(i) for i in index.reshape(-1).tolist()]
        self.dim, self.seed, self.block = dim, seed, block
        self.device, self.dtype = device, dtype

    def __call__(self, start: int, count: int) -> Tensor:
        first, last = start // self.block, (start + count - 1) // self.block
        # Scoring asks for chunks smaller than a block (memory-budgeted, nfvae.objectives):
        # the blocks drawn last are kept, so each block is drawn once, not once per chunk.
        cached = getattr(self, "_cached", None)
        if cached is None or not cached[0] <= first <= last <= cached[1]:
            columns = []
            for example in self.index:
                columns.append(torch.cat([
                    torch.randn(self.block, self.dim, generator=torch.Generator().manual_seed(
                        stream_seed(self.seed, example, b)))
                    for b in range(first, last + 1)
                ]))
            eps = (torch.stack(columns, dim=1) if columns
                   else torch.empty((last - first + 1) * self.block, 0, self.dim))
            cached = self._cached = (first, last, eps)
        offset = start - cached[0] * self.block
        return cached[2][offset:offset + count].to(device=self.device, dtype=self.dtype)


def block_size(num_samples: int) -> int:
    return max(1, min(num_samples, NOISE_BLOCK))


def example_noise(model: FlowVAE, x: Tensor, index: Tensor, num_samples: int,
                  seed: int) -> ExampleNoise:
    return ExampleNoise(index, model.latent_dim, seed, block_size(num_samples), device=x.device)


@torch.no_grad()
def example_elbo(model: FlowVAE, x: Tensor, index: Tensor, seed: int = 0) -> dict[str, Tensor]:
    """Single-sample negative ELBO per example with fixed noise: {neg_elbo, recon, kl}: (B,)."""
    terms = model(x, eps=example_noise(model, x, index, 1, seed)(0, 1))
    recon = -terms.log_px.mean(0)
    kl = terms.kl.mean(0)
    return {"neg_elbo": recon + kl, "recon": recon, "kl": kl}


@torch.no_grad()
def example_nll(model: FlowVAE, x: Tensor, index: Tensor, num_samples: int, seed: int = 0,
                max_batch_samples: int = 2**16) -> Tensor:
    """Importance-sampled -log p(x) per example with fixed noise, shape (B,)."""
    noise = example_noise(model, x, index, num_samples, seed)
    return -importance_log_likelihood(model, x, num_samples, max_batch_samples, noise=noise)
