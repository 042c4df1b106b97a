"""Dynamic binarization draws Bernoulli(pixel) samples, fresh for every training batch."""

from __future__ import annotations

import math

import torch

from nfvae.data.base import sample_binary


def test_sample_binary_draws_bernoulli_of_each_entry():
    torch.manual_seed(0)
    p = torch.tensor([0.0, 0.05, 0.3, 0.5, 0.9, 1.0])
    draws = sample_binary(p.expand(200_000, -1).contiguous())
    assert draws.dtype == p.dtype
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    freq = draws.mean(0)
    # Exact at p = 0 and 1; elsewhere within 5 standard errors of p.
    assert freq[0] == 0 and freq[-1] == 1
    stderr = (p * (1 - p) / draws.shape[0]).sqrt()
    assert ((freq - p).abs() <= 5 * stderr + 1e-12).all(), (freq, p)
    # Entries are independent: the two middle columns agree as often as p^2 + (1-p)^2.
    agree = (draws[:, 3] == draws[:, 2]).float().mean()
    expected = 0.5 * 0.3 + 0.5 * 0.7
    assert abs(float(agree) - expected) < 5 * math.sqrt(expected * (1 - expected) / 200_000)


def test_training_batches_get_a_fresh_draw_each_time(compose_cfg):
    from nfvae.training import build_datamodule, build_module, instantiate

    cfg = compose_cfg(["trainer.max_epochs=1", "trainer.limit_train_batches=1"])
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg, datamodule.data_shape)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    trainer.fit(module, datamodule=datamodule)  # attaches the trainer to the data module
    trainer.state.stage = "train"  # what Lightning sets while it trains
    batch = next(iter(datamodule.train_dataloader()))
    first = datamodule.on_after_batch_transfer(batch, 0)[0]
    second = datamodule.on_after_batch_transfer(batch, 0)[0]
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(first, second)
    # Pixels that are 0 or 1 in the grey-level image stay as they are.
    x = batch[0]
    assert (first[x == 0] == 0).all() and (first[x == 1] == 1).all()
