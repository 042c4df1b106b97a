"""Bad input fails early with a message naming the problem, and loses nothing."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException

from nfvae.data import DataNotFoundError
from nfvae.module import NonFiniteLossError
from nfvae.training import check_output_dir, train
from tests_support import read_events

QUICK = ["trainer.max_epochs=3", "trainer.limit_train_batches=3", "trainer.log_every_n_steps=1",
         "trainer.enable_progress_bar=false", "~callbacks.progress_bar", "~callbacks.images",
         "test.enabled=false"]


def test_missing_mnist_directory_names_path_and_remedy(compose_cfg, tmp_path):
    missing = tmp_path / "no_such_dir"
    cfg = compose_cfg(["data=mnist", f"data.data_dir={missing}", "data.download=false", *QUICK])
    with pytest.raises(DataNotFoundError) as info:
        train(cfg)
    message = str(info.value)
    assert str(missing) in message and "data.download=true" in message and "data_dir" in message
    assert not (tmp_path / "run" / "checkpoints").exists(), "failed before training started"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.latent_dim=0", "model.latent_dim must be >= 1, got 0"),
        ("flow.num_layers=-1", "flow.num_layers must be >= 0, got -1"),
        ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
        ("model.num_samples=0", "model.num_samples must be >= 1, got 0"),
        ("data.binarize=sometimes", "data.binarize must be one of"),
    ],
)
def test_invalid_sizes_fail_before_training(override, message, compose_cfg, tmp_path):
    cfg = compose_cfg([override, *QUICK])
    with pytest.raises((ValueError, InstantiationException), match=message):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_wrong_input_shape_is_named():
    from nfvae.training import build_module
    from tests_support import compose_default

    module = build_module(compose_default(), (1, 8, 8))
    with pytest.raises(ValueError, match=r"expected x of shape \(B, 1, 8, 8\), got \(2, 1, 28, 28\)"):
        module.model(torch.zeros(2, 1, 28, 28))


def test_unwritable_output_dir_fails_at_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="cannot write to the output directory"):
        check_output_dir(blocker / "run")


class PoisonWeightsAtEpoch(pl.Callback):
    """Sets one encoder weight to NaN at the start of an epoch, as a diverging run would."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                pl_module.model.to_mu.weight[0, 0] = float("nan")


def test_nonfinite_loss_stops_with_named_step_and_keeps_last_good_checkpoint(
        compose_cfg, tmp_path):
    # The poison callback joins the real callbacks through the config, as a user's would.
    cfg = compose_cfg([*QUICK, "+callbacks.poison._target_=test_bad_input.PoisonWeightsAtEpoch",
                       "+callbacks.poison.epoch=1"])
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg)
    message = str(info.value)
    assert "global step 3" in message and "epoch 1" in message
    assert "loss" in message and "neg_elbo" in message and "recon" in message

    run = tmp_path / "run"
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and last["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert (run / "checkpoints" / "on_exception.ckpt").is_file()
    events = read_events(run)
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1, 2]
    assert len(events.Scalars("val/neg_elbo")) == 1
