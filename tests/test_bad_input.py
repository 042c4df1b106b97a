"""Bad input fails early with a message naming the problem, and loses nothing."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException

from nfvae.callbacks import NonFiniteLossError
from nfvae.data import DataNotFoundError
from nfvae.tasks.common import check_output_dir
from nfvae.training import train
from cli_support import run_script
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
        ("objective.num_samples=0", "objective.num_samples must be >= 1, got 0"),
        # moved out of the model group: the old key names the new one
        ("model.num_samples=5", "model.num_samples is now objective.num_samples: pass "
                                "objective.num_samples=5 instead"),
        ("model.compile=true", "model.compile is now training.compile"),
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


# -- the command line: one paragraph, no traceback, no junk run folder ----------------

def _random_bytes_checkpoint(tmp_path):
    path = tmp_path / "random.ckpt"
    path.write_bytes(bytes(range(256)) * 16)
    return path


def _text_npz(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("these are notes, not arrays\n")
    return path


@pytest.mark.parametrize(
    ("script", "make_args", "paragraph"),
    [
        ("train.py", lambda tmp: ["trainer.max_epochs=abc"],
         "train.py: error: trainer.max_epochs must be an integer, got 'abc'"),
        ("train.py", lambda tmp: ["optimizer.lr=0"], "train.py: error: optimizer.lr must be > 0, got 0"),
        ("train.py", lambda tmp: ["data=mnist", f"data.data_dir={tmp / 'nowhere'}",
                                  "data.download=false"],
         "train.py: error: MNIST not found under"),
        ("train.py", lambda tmp: ["data=npz", f"data.path={_text_npz(tmp)}"],
         "is not an .npz archive"),
        ("eval.py", lambda tmp: [f"ckpt_path={_random_bytes_checkpoint(tmp)}"],
         "eval.py: error: could not load checkpoint"),
    ],
    ids=["max_epochs_abc", "lr_zero", "missing_data", "text_npz", "random_checkpoint"],
)
def test_command_line_error_is_one_paragraph_and_leaves_no_run_folder(script, make_args,
                                                                       paragraph, tmp_path):
    # The default run folder (outputs/<date>/<time> under the working directory): a
    # failed start must leave nothing there, not even the empty date folder.
    result = run_script(script, *make_args(tmp_path), cwd=tmp_path)
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    assert paragraph in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr
    assert not (tmp_path / "outputs").exists(), sorted(map(str, (tmp_path / "outputs").rglob("*")))


def test_full_error_brings_the_traceback_back(tmp_path):
    result = run_script("train.py", "optimizer.lr=-0.001", cwd=tmp_path,
                        env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "optimizer.lr must be > 0, got -0.001" in result.stderr


def test_failed_start_in_an_existing_run_folder_keeps_it(tmp_path):
    # A resume that fails (a broken checkpoint) must not delete the run it was resuming.
    run = tmp_path / "run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "tensorboard" / "events.out.tfevents.1").write_bytes(b"earlier run")
    (run / "train.log").write_text("the earlier run's log\n")
    result = run_script("train.py", f"hydra.run.dir={run}",
                        f"ckpt_path={_random_bytes_checkpoint(tmp_path)}", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.output
    assert (run / "tensorboard" / "events.out.tfevents.1").read_bytes() == b"earlier run"
    log = (run / "train.log").read_text()
    assert log.startswith("the earlier run's log") and "could not load checkpoint" in log


def test_remove_failed_start_only_removes_hydra_files(tmp_path):
    from nfvae.cli import remove_failed_start

    empty = tmp_path / "outputs" / "2026-01-01" / "10-00-00"
    (empty / ".hydra").mkdir(parents=True)
    (empty / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (empty / "checkpoints").mkdir()
    (empty / "train.log").write_text("")
    # A logger made before the failure, with nothing logged: not a run either.
    from torch.utils.tensorboard import SummaryWriter

    SummaryWriter(str(empty / "tensorboard")).close()
    assert list((empty / "tensorboard").glob("events.out.tfevents.*"))
    assert remove_failed_start(empty, empty / "train.log")
    assert not (tmp_path / "outputs").exists()

    logged = tmp_path / "logged"
    (logged / ".hydra").mkdir(parents=True)
    with SummaryWriter(str(logged / "tensorboard")) as writer:
        writer.add_scalar("train/loss", 1.0, 0)
    assert not remove_failed_start(logged, logged / "train.log")
    assert list((logged / "tensorboard").glob("events.out.tfevents.*"))

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "on_exception.ckpt").write_bytes(b"x")
    assert not remove_failed_start(run, run / "train.log")
    assert (run / "checkpoints" / "on_exception.ckpt").is_file()


def test_nonpositive_learning_rate_is_refused_before_anything_is_built(compose_cfg, tmp_path):
    from nfvae.validation import ConfigError

    for lr in ("0", "-1e-3"):
        with pytest.raises(ConfigError, match="optimizer.lr must be > 0"):
            train(compose_cfg([f"optimizer.lr={lr}", *QUICK]))
    assert not (tmp_path / "run").exists()


def test_random_bytes_checkpoint_is_called_corrupted_not_python_objects(tmp_path):
    from nfvae.checkpoints import CheckpointError, read_checkpoint

    with pytest.raises(CheckpointError, match="truncated or corrupted") as info:
        read_checkpoint(_random_bytes_checkpoint(tmp_path))
    assert "Python objects" not in str(info.value)
