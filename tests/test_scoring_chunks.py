"""Scoring in memory-budgeted chunks: the chunk follows the budget, and the fixed-noise
NLL does not depend on it (chunks smaller than a noise block reuse the drawn block)."""

from __future__ import annotations

import pytest
import torch

from nfvae.evaluation import ExampleNoise, example_nll
from nfvae.objectives import SCORING_CHUNK_MB, samples_per_chunk
from nfvae.training import build_module


def test_chunk_follows_the_memory_budget(compose_cfg):
    model = build_module(compose_cfg(["flow.num_layers=2"]), (1, 28, 28)).model
    # Bernoulli: one parameter per pixel, float32: 4 * 784 * (1 + 3) bytes per sample.
    assert samples_per_chunk(model, 1.0) == 2**20 // (4 * 784 * 4)
    assert samples_per_chunk(model) == int(SCORING_CHUNK_MB * 2**20) // (4 * 784 * 4)
    assert samples_per_chunk(model.double(), 1.0) == 2**20 // (8 * 784 * 4)
    with pytest.raises(ValueError, match="max_batch_mb must be > 0"):
        samples_per_chunk(model, 0)


def test_nll_does_not_depend_on_the_chunk(compose_cfg):
    cfg = compose_cfg(["flow.num_layers=2"])
    torch.manual_seed(0)
    model = build_module(cfg, (1, 8, 8)).model.eval()
    x = torch.bernoulli(torch.rand(10, 1, 8, 8))
    index = torch.arange(100, 110)
    whole = example_nll(model, x, index, num_samples=250, seed=0, max_batch_samples=10**6)
    # 10 images x 7 samples per chunk: chunks straddle the 100-sample noise blocks.
    chunked = example_nll(model, x, index, num_samples=250, seed=0, max_batch_samples=70)
    torch.testing.assert_close(whole, chunked, rtol=0, atol=1e-5)


def test_noise_in_small_chunks_equals_one_draw():
    noise = ExampleNoise(torch.arange(3, 7), dim=5, seed=2, block=100)
    whole = noise(0, 250)
    fresh = ExampleNoise(torch.arange(3, 7), dim=5, seed=2, block=100)
    parts = torch.cat([fresh(start, min(30, 250 - start)) for start in range(0, 250, 30)])
    assert torch.equal(whole, parts)
    assert torch.equal(fresh(120, 10), whole[120:130])  # going back to an earlier block
