"""Faults: non-finite gradients stop or are skipped, bad checkpoints are named before any
tensor is copied, a full disk fails at start, reduced precision keeps the log-dets in
float32, torch.compile is an option."""

from __future__ import annotations

import logging
import os
import shutil

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from nfvae.callbacks import NonFiniteGradientError, NonFiniteLossError
from nfvae.checkpoints import CheckpointError
from nfvae.loading import load_module
from nfvae.tasks.common import check_output_dir
from nfvae.training import build_module, train
from tests_support import read_events as events

QUICK = ["trainer.max_epochs=2", "trainer.limit_train_batches=4", "trainer.log_every_n_steps=1",
         "trainer.enable_progress_bar=false", "~callbacks.progress_bar", "~callbacks.images",
         "trainer.enable_model_summary=false", "test.enabled=false"]


class PoisonGradient(pl.Callback):
    """After backward at the given global steps, one gradient entry becomes NaN."""

    def __init__(self, steps: list[int], parameter: str = "model.to_mu.weight"):
        self.steps, self.parameter = set(steps), parameter

    def on_after_backward(self, trainer, pl_module):
        if trainer.global_step in self.steps:
            dict(pl_module.named_parameters())[self.parameter].grad.view(-1)[0] = float("nan")


class PoisonBatch(pl.Callback):
    """At the given global steps the input is NaN, so the loss itself is not finite."""

    def __init__(self, steps: list[int]):
        self.steps = set(steps)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step in self.steps:
            batch[0].fill_(float("nan"))


class SkippedStepsChangeNothing(pl.Callback):
    """Fails the run if a step that should be skipped moves a weight or Adam moment."""

    def __init__(self, steps: list[int]):
        self.steps, self.before = set(steps), None

    @staticmethod
    def snapshot(trainer, pl_module):
        state = trainer.optimizers[0].state
        return ({n: p.detach().clone() for n, p in pl_module.named_parameters()},
                {id(p): {k: v.clone() for k, v in state[p].items()} for p in state})

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step in self.steps:
            self.before = self.snapshot(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.before is None:
            return
        (weights, moments), self.before = self.before, None
        now_weights, now_moments = self.snapshot(trainer, pl_module)
        for name, value in weights.items():
            assert torch.equal(value, now_weights[name]), f"skipped step changed {name}"
        assert moments.keys() == now_moments.keys()
        for key, state in moments.items():
            assert all(torch.equal(v, now_moments[key][k]) for k, v in state.items())


def test_nonfinite_gradient_stops_naming_step_and_parameter(compose_cfg, tmp_path):
    cfg = compose_cfg([*QUICK, "+callbacks.poison._target_=test_faults.PoisonGradient",
                       "+callbacks.poison.steps=[5]"])
    with pytest.raises(NonFiniteGradientError) as info:
        train(cfg)
    message = str(info.value)
    assert "global step 5" in message and "epoch 1" in message
    assert "model.to_mu.weight" in message and "training.skip_nonfinite=true" in message
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_skip_nonfinite_skips_and_counts_bad_batches(compose_cfg, tmp_path):
    bad = [1, 3, 5]
    cfg = compose_cfg([*QUICK, "training.skip_nonfinite=true",
                       "+callbacks.poison._target_=test_faults.PoisonGradient",
                       "+callbacks.poison.steps=[1,3]",
                       "+callbacks.nan_input._target_=test_faults.PoisonBatch",
                       "+callbacks.nan_input.steps=[5]",
                       "+callbacks.unchanged._target_=test_faults.SkippedStepsChangeNothing",
                       f"+callbacks.unchanged.steps={bad}"])
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["val/neg_elbo"]))
    run = events(tmp_path / "run")
    skipped = run.Scalars("train/skipped_nonfinite")
    # cumulative, logged with each step's figures (a skip shows from the next step on)
    assert [(e.step, e.value) for e in skipped] == [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2),
                                                     (5, 2), (6, 3), (7, 3)]
    loss = {e.step: e.value for e in run.Scalars("train/loss")}
    assert sorted(loss) == list(range(8))
    assert [s for s, v in loss.items() if v != v] == [5]  # the NaN batch shows as NaN
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["nfvae"]["skipped_nonfinite"] == 3
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_resume_after_a_nonfinite_stop_takes_the_last_good_checkpoint(compose_cfg, tmp_path,
                                                                     caplog):
    """The exception checkpoint of a non-finite loss holds finite weights that lead
    straight back to it: ckpt_path=last passes over it, says why, and resumes from
    last.ckpt."""
    with pytest.raises(NonFiniteLossError, match="global step 5"):
        train(compose_cfg([*QUICK, "+callbacks.nan_input._target_=test_faults.PoisonBatch",
                           "+callbacks.nan_input.steps=[5]"]))
    checkpoints = tmp_path / "run" / "checkpoints"
    stopped = torch.load(checkpoints / "on_exception.ckpt", weights_only=True)
    assert stopped["global_step"] == 5
    assert all(torch.isfinite(v).all() for v in stopped["state_dict"].values())
    with caplog.at_level(logging.INFO):
        metrics = train(compose_cfg([*QUICK, "ckpt_path=last"]))
    assert (f"not resuming from {checkpoints / 'on_exception.ckpt'} (global step 5): training "
            "stopped there on a non-finite loss or gradient (NonFiniteLossError)") in caplog.text
    assert f"resuming from {checkpoints / 'last.ckpt'} (global step 4)" in caplog.text
    assert torch.isfinite(torch.tensor(metrics["val/neg_elbo"]))
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 8


def test_resume_after_a_nonfinite_first_step_names_the_checkpoint_it_passed_over(
        compose_cfg, tmp_path):
    with pytest.raises(NonFiniteLossError):
        train(compose_cfg([*QUICK, "optimizer.lr=1e6"]))
    with pytest.raises(FileNotFoundError, match=(
            r"no checkpoint .* to resume from\. Passed over: checkpoints/on_exception\.ckpt "
            r"\(global step \d+\): training stopped there on a non-finite loss")):
        train(compose_cfg([*QUICK, "ckpt_path=last"]))


def test_detect_anomaly_reaches_the_trainer(compose_cfg):
    cfg = compose_cfg(["trainer.detect_anomaly=true"])
    assert instantiate(cfg.trainer)._detect_anomaly is True


def test_full_disk_fails_at_start(compose_cfg, tmp_path):
    cfg = compose_cfg([*QUICK, "training.min_free_mb=1e12"])
    with pytest.raises(OSError, match=r"MiB free on the disk .*training\.min_free_mb"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
    with pytest.raises(OSError, match="cannot write to the output directory"):
        check_output_dir("/proc/nfvae-cannot-be-here")


@pytest.fixture(scope="module")
def planar_checkpoint(tmp_path_factory):
    from tests_support import compose_default

    out = tmp_path_factory.mktemp("planar")
    train(compose_default([*QUICK, "trainer.max_epochs=1", "trainer.limit_train_batches=2"],
                          output_dir=out))
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize(("override", "named"), [
    ("flow=radial", "flow.name is 'planar' in the checkpoint but 'radial' in the config"),
    ("model.latent_dim=4", "model.latent_dim is 8 in the checkpoint but 4 in the config"),
    ("flow.num_layers=2", "flow.num_layers is 4 in the checkpoint but 2"),
])
def test_resuming_a_mismatched_checkpoint_names_the_mismatch(
        override, named, planar_checkpoint, compose_cfg, tmp_path):
    cfg = compose_cfg([*QUICK, override, f"ckpt_path={planar_checkpoint}"])
    with pytest.raises(CheckpointError) as info:
        train(cfg)
    assert named in str(info.value) and str(planar_checkpoint) in str(info.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_truncated_checkpoint_is_named_on_resume_and_eval(planar_checkpoint, compose_cfg,
                                                          tmp_path):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(planar_checkpoint.read_bytes()[:5000])
    cfg = compose_cfg([*QUICK, f"ckpt_path={broken}"])
    with pytest.raises(CheckpointError, match=r"broken\.ckpt: the file is truncated or corrupted"):
        train(cfg)
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_module(broken)


class RunsCode:
    """Unpickling this would call os.mkdir: what a malicious checkpoint could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def test_checkpoint_that_would_run_code_is_refused(planar_checkpoint, tmp_path):
    checkpoint = torch.load(planar_checkpoint, weights_only=True)
    marker = tmp_path / "code-ran"
    checkpoint["payload"] = RunsCode(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(checkpoint, evil)
    with pytest.raises(CheckpointError, match="refuses to unpickle"):
        load_module(evil)
    assert not marker.exists()


def test_eval_of_a_sound_checkpoint_still_loads(planar_checkpoint, tmp_path):
    copy = tmp_path / "copy.ckpt"
    shutil.copy(planar_checkpoint, copy)
    module = load_module(copy)
    state = torch.load(copy, weights_only=True)["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in module.state_dict().items())


def test_bf16_autocast_keeps_log_dets_and_densities_in_float32(compose_cfg):
    torch.manual_seed(0)
    model = build_module(compose_cfg(["flow=planar"]), (1, 8, 8)).model
    x = torch.bernoulli(torch.rand(16, 1, 8, 8))
    eps = torch.randn(3, 16, model.latent_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = model(x, eps=eps)
        _, _, context = model.encode(x)
        decoder_out = model.decoder(terms.zK[0])
    assert context.dtype == decoder_out.dtype == torch.bfloat16  # the nets did run in bf16
    for name in ("log_px", "log_pz", "log_q0", "sum_log_det", "z0", "zK"):
        assert getattr(terms, name).dtype == torch.float32, name
    # The flow ran in float32 on the float32 copies of z0 and the context: the same
    # computation outside autocast gives the same log-dets, bit for bit.
    zK, sum_log_det = model.flow.forward_repeated(
        terms.z0.reshape(-1, model.latent_dim), context.float(), 3)
    assert torch.equal(sum_log_det.view(3, 16), terms.sum_log_det)
    assert torch.equal(zK.view(3, 16, -1), terms.zK)


def test_bf16_mixed_training_runs(compose_cfg):
    metrics = train(compose_cfg([*QUICK, "trainer.max_epochs=1", "trainer.precision=bf16-mixed"]))
    assert torch.isfinite(torch.tensor(metrics["val/neg_elbo"]))


@pytest.mark.slow
def test_compiled_model_trains(compose_cfg):
    # aot_eager: dynamo and AOT autograd through the real training, validation and
    # checkpoint path; inductor's code generation (minutes on two cores) runs in
    # benchmarks/bench_precision.py.
    metrics = train(compose_cfg([*QUICK, "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                                 "trainer.limit_val_batches=1", 
                                 "training.compile={backend:aot_eager}"]))
    assert torch.isfinite(torch.tensor(metrics["val/neg_elbo"]))
