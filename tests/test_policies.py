"""The policies every module gets (nfvae.callbacks through nfvae.modules.TrainingModule),
the one warm-up function, the typed settings, per-module resume settings, and the
callback lists composed from one file per callback."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import nn

from nfvae.callbacks import ExactResumeRNG, NonFiniteGuard, NonFiniteLossError
from nfvae.checkpoints import CheckpointError, check_compatible
from nfvae.module import FlowVAEModule
from nfvae.objectives import Warmup, kl_warmup_beta
from nfvae.settings import ModelSettings, ObjectiveSettings
from nfvae.toy.module import ReverseKLModule
from nfvae.loading import load_module
from nfvae.training import build_module, train

TOY = ["experiment=toy/u1", "flow=planar", "flow.num_layers=2", "trainer.max_epochs=1",
       "data.steps_per_epoch=4", "data.num_val=64", "data.num_test=64",
       "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "callbacks=none",
       "test.enabled=false"]


class PoisonToyBatch(pl.Callback):
    """At the given global steps the base draws are NaN, so the loss is not finite."""

    def __init__(self, steps: list[int]):
        self.steps = set(steps)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step in self.steps:
            batch[0].fill_(float("nan"))


@pytest.mark.parametrize("overrides", [[], TOY], ids=["vae", "toy"])
def test_every_module_gets_the_policy_callbacks(compose_cfg, overrides):
    module = build_module(compose_cfg(overrides), (1, 8, 8) if not overrides else (2,))
    kinds = [type(c) for c in module.configure_callbacks()]
    assert kinds == [NonFiniteGuard, ExactResumeRNG]


def test_the_toy_module_stops_on_a_nonfinite_loss_without_any_configured_callback(
        compose_cfg, tmp_path):
    """callbacks=none: the guard comes with the module, names the step and the values."""
    cfg = compose_cfg([*TOY, "+callbacks.nan._target_=test_policies.PoisonToyBatch",
                       "+callbacks.nan.steps=[2]"])
    with pytest.raises(NonFiniteLossError, match=r"global step 2 .*loss=nan"):
        train(cfg)


def test_the_toy_module_skips_and_counts_with_skip_nonfinite(compose_cfg, tmp_path):
    from tests_support import read_events

    with_checkpoints = [o for o in TOY if o != "callbacks=none"]
    cfg = compose_cfg([*with_checkpoints, "training.skip_nonfinite=true", "~callbacks.density",
                       "~callbacks.diagnose", "~callbacks.progress_bar",
                       "+callbacks.nan._target_=test_policies.PoisonToyBatch",
                       "+callbacks.nan.steps=[1]"])
    train(cfg)
    skipped = read_events(tmp_path / "run").Scalars("train/skipped_nonfinite")
    assert [(e.step, e.value) for e in skipped] == [(0, 0), (1, 0), (2, 1), (3, 1)]
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["nfvae"]["skipped_nonfinite"] == 1
    assert isinstance(last["nfvae"]["rng"][0]["torch"], torch.Tensor)  # exact resume too


def test_warmup_is_one_function_counted_in_steps():
    epochs = Warmup(0.2, epochs=10)
    steps = Warmup(0.2, steps=100)
    for step in (0, 10, 55, 100, 250):
        assert epochs.beta(step, steps_per_epoch=10) == steps.beta(step)
        assert steps.beta(step) == kl_warmup_beta(0.2, 100, step)
    assert steps.beta(50) == pytest.approx(0.6) and steps.beta(100) == 1.0
    assert Warmup(0.5).beta(0) == 1.0  # no warm-up
    with pytest.raises(ValueError, match="not both"):
        Warmup(0.1, steps=10, epochs=1)


def test_the_toy_anneal_and_the_vae_warmup_share_it():
    toy = ReverseKLModule(data_shape=[2], target={"_target_": "nfvae.toy.targets.U1"},
                          flow={"_target_": "nfvae.flows.stack", "_partial_": True,
                                "name": "none", "family": None, "num_layers": 0,
                                "amortized": False},
                          optimizer={"_target_": "torch.optim.Adam", "_partial_": True},
                          beta_start=0.1, anneal_steps=100)
    assert toy.warmup == Warmup(0.1, steps=100)
    assert ObjectiveSettings.parse({"beta_start": 0.2, "warmup_epochs": 10}).warmup == Warmup(
        0.2, epochs=10)


def test_settings_are_parsed_once_with_named_errors():
    model = {"latent_dim": 4, "encoder": {}, "decoder": {}, "likelihood": {}}
    settings, moved = ModelSettings.parse(model)
    assert settings.latent_dim == 4 and moved == {}
    # an older checkpoint's model group still carries the two training settings
    _, moved = ModelSettings.parse({**model, "num_samples": 3, "compile": False})
    assert moved == {"num_samples": 3, "compile": False}
    with pytest.raises(ValueError, match="unknown model setting.*latent_dims"):
        ModelSettings.parse({**model, "latent_dims": 4})
    with pytest.raises(ValueError, match="objective.num_samples must be >= 1"):
        ObjectiveSettings.parse({"num_samples": 0})
    with pytest.raises(ValueError, match="unknown objective setting.*warmup_epoch"):
        ObjectiveSettings.parse({"warmup_epoch": 3})


def test_the_shipped_config_puts_num_samples_and_compile_with_training(compose_cfg):
    cfg = compose_cfg([])
    module = build_module(cfg, (1, 8, 8))
    assert module.objective.num_samples == cfg.objective.num_samples == 1
    assert "num_samples" not in module.hparams.model and "compile" not in module.hparams.model
    assert module.hparams.compile == "auto"
    assert module.settings.latent_dim == cfg.model.latent_dim


def _old_layout(checkpoint: dict) -> dict:
    """A checkpoint as main wrote it before the move: num_samples and compile in model."""
    hparams = dict(checkpoint["hyper_parameters"])
    objective = dict(hparams["objective"])
    hparams["model"] = {**hparams["model"], "num_samples": objective.pop("num_samples"),
                        "compile": hparams.pop("compile")}
    hparams["objective"] = objective
    return {**checkpoint, "hyper_parameters": hparams}


def test_checkpoints_of_the_old_layout_load_and_resume(compose_cfg, tmp_path):
    quick = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "test.enabled=false",
             "trainer.enable_progress_bar=false", "~callbacks.progress_bar", "~callbacks.images",
             "~callbacks.latent", "~callbacks.projector", "~callbacks.diagnose",
             "objective.num_samples=2"]
    train(compose_cfg(quick))
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    old = _old_layout(torch.load(path, weights_only=True))
    torch.save(old, path)
    module = load_module(path)
    assert module.objective.num_samples == 2  # the old model.num_samples applies
    assert FlowVAEModule.load_from_checkpoint(path, weights_only=True).objective.num_samples == 2
    metrics = train(compose_cfg([*quick, "trainer.max_epochs=2", "ckpt_path=last"]))
    assert torch.isfinite(torch.tensor(metrics["val/neg_elbo"]))


class _Declares(nn.Module):
    RESUME_SETTINGS = ("lr",)

    def __init__(self, **hparams):
        super().__init__()
        self.hparams = hparams


def test_each_module_declares_what_a_resume_may_change():
    checkpoint = {"hyper_parameters": {"lr": 1.0, "width": 3}, "state_dict": {}}
    check_compatible(checkpoint, _Declares(lr=2.0, width=3), "x.ckpt")  # a setting: warns
    with pytest.raises(CheckpointError, match="width is 3 in the checkpoint but 4"):
        check_compatible(checkpoint, _Declares(lr=1.0, width=4), "x.ckpt")
    assert "objective" in FlowVAEModule.RESUME_SETTINGS
    assert "objective" not in ReverseKLModule.RESUME_SETTINGS


def test_callback_lists_compose_one_file_per_callback(compose_cfg):
    vae = compose_cfg([]).callbacks
    toy = compose_cfg(["experiment=toy/u1"]).callbacks
    image = compose_cfg(["experiment=glow/digits"]).callbacks
    shared = ("on_exception", "progress_bar", "grad_norm", "diagnose")
    assert all(vae[name] == toy[name] == image[name] for name in shared)
    assert {**vae.model_checkpoint, "monitor": "val/loss"} == dict(toy.model_checkpoint)
    assert list(toy) == ["model_checkpoint", "on_exception", "progress_bar", "density",
                         "grad_norm", "diagnose"]
    assert {**vae.model_checkpoint, "monitor": "val/bpd"} == dict(image.model_checkpoint)
    assert instantiate(toy.model_checkpoint).monitor == "val/loss"
