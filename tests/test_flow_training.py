"""Each family of the zoo trains through the real conf/ and nfvae.training.train.

A few steps on the default data (the 8x8 digits), the flow chosen as
``flow=<name>`` exactly as on the command line; the losses must stay finite.
planar, radial and none are covered by test_training.py.
"""

from __future__ import annotations

import math

import pytest

from nfvae.training import train

NEW_FAMILIES = ["householder", "sylvester_orthogonal", "sylvester_householder",
                "sylvester_triangular", "iaf", "realnvp", "glow", "spline"]
# What keeps a run short: three training batches, one validation batch, no test
# pass, no callbacks (checkpoints, images), no progress bar; the TensorBoard logger stays.
QUICK = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
         "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false", "test.enabled=false", "callbacks=none"]


def assert_finite_losses(metrics):
    for key in ("train/loss", "train/neg_elbo", "train/sum_log_det", "val/neg_elbo"):
        assert key in metrics and math.isfinite(metrics[key]), (key, metrics.get(key))


@pytest.mark.parametrize("amortized", ["true", "false"])
@pytest.mark.parametrize("flow", NEW_FAMILIES)
def test_family_trains_with_finite_losses(flow, amortized, compose_cfg):
    cfg = compose_cfg([f"flow={flow}", f"flow.amortized={amortized}", "flow.num_layers=2",
                       *QUICK])
    assert cfg.flow.name == flow
    assert_finite_losses(train(cfg))


def test_mixed_stack_trains_from_a_list_of_family_names(compose_cfg):
    cfg = compose_cfg(["flow=mixed", "flow.layers=[sylvester_orthogonal,realnvp,iaf]",
                       "flow.num_layers=2", "flow.families.realnvp.family.hidden_dims=[16]",
                       *QUICK])
    assert_finite_losses(train(cfg))


def test_glow_checkpoint_keeps_actnorm_initialisation(compose_cfg, tmp_path):
    """ActNorm initialises on the first batch; a checkpoint must restore it, not redo it."""
    import torch

    from nfvae.loading import load_module

    cfg = compose_cfg(["flow=glow", "flow.num_layers=2", *QUICK])
    train(cfg)
    checkpoints = sorted((tmp_path / "run").rglob("*.ckpt"))
    assert checkpoints, "the Trainer's default checkpointing wrote nothing"
    model = load_module(checkpoints[-1]).model
    actnorm = model.flow.layers[0].actnorm
    assert bool(actnorm.initialized) and actnorm.log_scale.abs().sum() > 0
    saved = actnorm.log_scale.detach().clone()
    with torch.no_grad():
        model(torch.rand(7, *model.data_shape).bernoulli())
    torch.testing.assert_close(actnorm.log_scale, saved)
