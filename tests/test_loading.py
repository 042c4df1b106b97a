"""One loader for every checkpoint (nfvae.loading.load_module), and a new kind of model
that loads, is scored by task=nll and diagnosed with nothing in nfvae edited."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from tests_support import compose_default
from torch import Tensor, nn

from nfvae.checkpoints import CheckpointError
from nfvae.diagnose.report import diagnose_module
from nfvae.diagnose.thresholds import Thresholds
from nfvae.loading import LEGACY_CLASS_KEY, MODULE_KEY, class_path, load_module
from nfvae.module import FlowVAEModule
from nfvae.tasks.common import build_datamodule
from nfvae.tasks.nll import nll
from nfvae.toy.module import ReverseKLModule
from nfvae.training import train

QUICK = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.log_every_n_steps=1",
         "trainer.enable_progress_bar=false", "~callbacks.progress_bar",
         "trainer.enable_model_summary=false", "test.enabled=false"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A flow-VAE and a 2-D density checkpoint, each from a real two-step run."""
    vae, toy = tmp_path_factory.mktemp("vae"), tmp_path_factory.mktemp("toy")
    train(compose_default([*QUICK, "~callbacks.images"], output_dir=vae))
    train(compose_default([*QUICK, "experiment=toy/u1", "flow.num_layers=2",
                           "data.steps_per_epoch=2", "data.num_val=64", "data.num_test=64",
                           "~callbacks.density", "~callbacks.diagnose"], output_dir=toy))
    return {FlowVAEModule: vae / "checkpoints" / "last.ckpt",
            ReverseKLModule: toy / "checkpoints" / "last.ckpt"}


def _saved(path) -> dict:
    return torch.load(path, weights_only=True)


def _assert_same_weights(module, path) -> None:
    state = _saved(path)["state_dict"]
    assert set(module.state_dict()) == set(state)
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, state[name])


def test_every_module_records_its_class_and_loads_back_as_it(checkpoints):
    for module_class, path in checkpoints.items():
        assert _saved(path)[MODULE_KEY] == f"{module_class.__module__}.{module_class.__qualname__}"
        module = load_module(path)
        assert type(module) is module_class and not module.training
        _assert_same_weights(module, path)


def test_checkpoints_written_before_the_class_key_still_load(checkpoints, tmp_path):
    vae = _saved(checkpoints[FlowVAEModule])
    del vae[MODULE_KEY]  # main's flow-VAE checkpoints named no class
    torch.save(vae, tmp_path / "old_vae.ckpt")
    toy = _saved(checkpoints[ReverseKLModule])
    toy[LEGACY_CLASS_KEY] = toy.pop(MODULE_KEY)  # main's 2-D density checkpoints
    torch.save(toy, tmp_path / "old_toy.ckpt")
    assert type(load_module(tmp_path / "old_vae.ckpt")) is FlowVAEModule
    assert type(load_module(tmp_path / "old_toy.ckpt")) is ReverseKLModule
    _assert_same_weights(load_module(tmp_path / "old_toy.ckpt"), tmp_path / "old_toy.ckpt")


def test_a_checkpoint_naming_no_class_is_refused_with_the_fix_that_works(checkpoints,
                                                                            tmp_path):
    toy = _saved(checkpoints[ReverseKLModule])
    del toy[MODULE_KEY]
    path = tmp_path / "anonymous.ckpt"
    torch.save(toy, path)
    with pytest.raises(CheckpointError, match="does not say which module wrote it") as info:
        load_module(path)
    message = str(info.value)
    assert str(path) in message and "hyper_parameters (" in message
    # The command the message gives, run as printed, makes the file loadable.
    command = message[message.index('python -c "') + len('python -c "'):]
    command = command[:command.index('"')]
    subprocess.run([sys.executable, "-c", command], check=True, timeout=120)
    assert type(load_module(path)) is ReverseKLModule


def test_foreign_class_and_broken_files_are_named(checkpoints, tmp_path):
    foreign = _saved(checkpoints[FlowVAEModule])
    foreign[MODULE_KEY] = "nfvae.nowhere.Module"
    torch.save(foreign, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match=r"foreign\.ckpt: the module class it records, "
                                              r"nfvae\.nowhere\.Module, cannot be imported"):
        load_module(tmp_path / "foreign.ckpt")
    foreign[MODULE_KEY] = "torch.nn.Linear"
    torch.save(foreign, tmp_path / "linear.ckpt")
    with pytest.raises(CheckpointError, match="torch.nn.Linear is not a LightningModule"):
        load_module(tmp_path / "linear.ckpt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_module(tmp_path / "missing.ckpt")
    shutil.copy(checkpoints[FlowVAEModule], tmp_path / "cut.ckpt")
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "cut.ckpt").read_bytes()[:3000])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_module(tmp_path / "cut.ckpt")


class DiagonalGaussian(pl.LightningModule):
    """A new kind of model, written outside nfvae: a module and its class key, no more."""

    def __init__(self, data_shape: list[int], data: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        dims = math.prod(data_shape)
        self.mean = nn.Parameter(torch.full((dims,), 0.5))
        self.log_std = nn.Parameter(torch.zeros(dims))

    def example_nll(self, x: Tensor, index: Tensor, num_samples: int, seed: int,
                    max_batch_samples: int = 0) -> Tensor:
        normal = torch.distributions.Normal(self.mean, self.log_std.exp())
        return -normal.log_prob(x.flatten(1)).sum(1)

    def training_step(self, batch, batch_idx):
        x = batch[0]
        return self.example_nll(x, torch.arange(len(x)), 1, 0).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)

    def on_save_checkpoint(self, checkpoint):
        checkpoint[MODULE_KEY] = class_path(self)


def test_a_new_kind_of_model_loads_is_scored_and_diagnosed_with_nothing_edited(
        compose_cfg, tmp_path):
    data_cfg = compose_default().data
    datamodule = build_datamodule(data_cfg)
    module = DiagonalGaussian(list(datamodule.data_shape),
                              OmegaConf.to_container(data_cfg, resolve=True))
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    path = tmp_path / "gaussian.ckpt"
    trainer.save_checkpoint(path)

    loaded = load_module(path)
    assert type(loaded).__name__ == "DiagonalGaussian"
    _assert_same_weights(loaded, path)
    cfg = compose_cfg([f"ckpt_path={path}", "eval.num_samples=2"], config_name="eval",
                      output_dir=tmp_path / "eval")
    results = nll(cfg)
    x, _ = datamodule.split("test")
    expected = float(module.example_nll(x, torch.arange(len(x)), 1, 0).double().mean())
    assert results["nll"] == pytest.approx(expected, rel=1e-6)
    assert "neg_elbo" not in results  # a bound only a VAE has
    findings, scalars = diagnose_module(loaded, datamodule, None, Thresholds())
    assert findings == [] and scalars == {}  # no checks of its own; its run's would apply
