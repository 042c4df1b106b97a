"""Resume and preemption: which checkpoint ``ckpt_path`` picks, and that an interrupted
run, resumed, ends exactly where an uninterrupted one does."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

from nfvae.checkpoints import CheckpointError, resolve_resume
from nfvae.training import train
from tests_support import read_events

ROOT = Path(__file__).resolve().parents[1]
SLURM_ENV = {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NAME": "train",
             "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
             "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}


def fake_checkpoint(path: Path, value: float, age_s: float = 0, step: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.full((2,), value)}, "global_step": step}, path)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_last_in_an_empty_run_folder_says_where_to_point(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=last: no checkpoint .*hydra\.run\.dir"):
        resolve_resume("last", tmp_path)


def test_fresh_run_refuses_a_folder_that_holds_checkpoints(tmp_path, monkeypatch):
    for name in SLURM_ENV:
        monkeypatch.delenv(name, raising=False)
    fake_checkpoint(tmp_path / "checkpoints" / "last.ckpt", 1.0)
    with pytest.raises(FileExistsError, match=r"already holds checkpoints .*ckpt_path=last"):
        resolve_resume(None, tmp_path)


def test_last_is_the_latest_finite_checkpoint_and_slurm_requeue_resumes(tmp_path, monkeypatch):
    last = fake_checkpoint(tmp_path / "checkpoints" / "last.ckpt", 1.0, step=6)
    hpc = fake_checkpoint(tmp_path / "hpc_ckpt_1.ckpt", 2.0, step=8)
    assert resolve_resume("last", tmp_path) == hpc
    # a diverged run's exception checkpoint is later but not a state to resume from
    fake_checkpoint(tmp_path / "checkpoints" / "on_exception.ckpt", float("nan"), step=10)
    assert resolve_resume("last", tmp_path) == hpc
    # a requeued SLURM job (ckpt_path=null) continues from the newest
    for name, value in SLURM_ENV.items():
        monkeypatch.setenv(name, value)
    assert resolve_resume(None, tmp_path) == hpc
    assert resolve_resume(str(last), tmp_path) == last
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        resolve_resume(str(tmp_path / "nope.ckpt"), tmp_path)


class PauseAtStep(pl.Callback):
    """At a global step, write a marker and wait (at most a minute) for a signal, so the
    test preempts the run at a known step, as a scheduler would at an unknown one."""

    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            self.marker.write_text(str(os.getpid()))
            deadline = time.monotonic() + 60
            while not trainer.received_sigterm and time.monotonic() < deadline:
                time.sleep(0.05)


class PauseInEvaluation(pl.Callback):
    """After evaluation batch ``batch`` of the ``stage`` ("validation" or "test") in
    ``epoch``, write a marker and wait (at most a minute) for a signal."""

    def __init__(self, stage: str, batch: int, marker: str, epoch: int = 0):
        self.stage, self.batch, self.epoch, self.marker = stage, batch, epoch, Path(marker)

    def _pause(self, trainer, batch_idx):
        if trainer.sanity_checking or batch_idx != self.batch or self.marker.exists():
            return
        if self.stage == "validation" and trainer.current_epoch != self.epoch:
            return
        self.marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.05)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0):
        if self.stage == "validation":
            self._pause(trainer, batch_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.stage == "test":
            self._pause(trainer, batch_idx)


QUICK = ["trainer.max_epochs=3", "trainer.limit_train_batches=6", "trainer.log_every_n_steps=1",
         "trainer.enable_progress_bar=false", "~callbacks.progress_bar",
         "trainer.enable_model_summary=false", "trainer.deterministic=true",
         "test.num_samples=10"]


def launch(run: Path, *args: str, env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, **(env_extra or {}),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    log = open(run.parent / f"{run.name}-{time.monotonic_ns()}.log", "w")  # noqa: SIM115
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run}",
                             *QUICK, *args], cwd=run.parent, env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True)


def pause_at(step: int, marker: Path) -> list[str]:
    return ["+callbacks.pause._target_=test_resume.PauseAtStep",
            f"+callbacks.pause.step={step}", f"+callbacks.pause.marker={marker}"]


def pause_in(stage: str, batch: int, marker: Path, epoch: int = 0) -> list[str]:
    return ["+callbacks.pause._target_=test_resume.PauseInEvaluation",
            f"+callbacks.pause.stage={stage}", f"+callbacks.pause.batch={batch}",
            f"+callbacks.pause.epoch={epoch}", f"+callbacks.pause.marker={marker}"]


def wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, f"run ended (code {proc.returncode}) before the marker"
        assert time.monotonic() < deadline, "run did not reach the step in time"
        time.sleep(0.1)


def finish(proc: subprocess.Popen) -> int:
    return proc.wait(timeout=600)


def scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in read_events(run).Scalars(tag)]


def shown_steps(run: Path) -> dict[tuple[str, str], list[int]]:
    """{(kind, tag): steps} of every scalar, image and histogram TensorBoard shows."""
    events = read_events(run)
    tags = events.Tags()
    return {(kind, tag): [e.step for e in read(tag)]
            for kind, read in (("scalars", events.Scalars), ("images", events.Images),
                               ("histograms", events.Histograms))
            for tag in tags[kind]}


def raw_duplicates(run: Path) -> list[tuple[str, int]]:
    """(tag, step) pairs written more than once in the run's raw event files."""
    seen, twice = set(), []
    for path in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                key = (value.tag, event.step)
                (twice.append if key in seen else seen.add)(key)
    return sorted(twice)


def logs(tmp_path: Path, name: str) -> str:
    return "\n".join(p.read_text() for p in sorted(tmp_path.glob(f"{name}-*.log")))


@pytest.mark.slow
def test_preempted_and_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    """3 epochs of 6 steps. The interrupted run gets SIGTERM after 8 steps (mid-epoch 1;
    Lightning stops after the step and checkpoints/on_exception.ckpt is written), is
    resumed with ckpt_path=last, is SIGKILLed after 14 steps (nothing saved: it goes
    back to last.ckpt of epoch 1 and logs steps 12-13 again) and is resumed again."""
    straight = launch(tmp_path / "straight")
    run = tmp_path / "interrupted"
    first = launch(run, *pause_at(8, tmp_path / "m1"))
    wait_for(tmp_path / "m1", first)
    first.send_signal(signal.SIGTERM)
    assert finish(first) == 143, logs(tmp_path, "interrupted")[-3000:]
    saved = torch.load(run / "checkpoints" / "on_exception.ckpt", weights_only=True)
    assert saved["global_step"] == 8

    second = launch(run, "ckpt_path=last", *pause_at(14, tmp_path / "m2"))
    wait_for(tmp_path / "m2", second)
    second.kill()
    finish(second)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12

    third = launch(run, "ckpt_path=last")
    assert finish(third) == 0, logs(tmp_path, "interrupted")[-3000:]
    assert finish(straight) == 0, logs(tmp_path, "straight")[-3000:]
    text = logs(tmp_path, "interrupted")
    assert f"resuming from {run / 'checkpoints' / 'on_exception.ckpt'}" in text
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'}" in text

    # Model, optimizer, epoch, step and (through the RNG and the data position) every
    # batch's noise: the final state is bit-identical.
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (2, 18)
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name
    for i, state in a["optimizer_states"][0]["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value),
                               torch.as_tensor(b["optimizer_states"][0]["state"][i][key]))
    # TensorBoard continues in the same folder: every step once, the same values,
    # the warm-up's beta included.
    for tag in ("train/loss", "train/beta", "val/neg_elbo", "zz_test/nll"):
        assert scalars(run, tag) == scalars(tmp_path / "straight", tag), tag
    assert [s for s, _ in scalars(run, "train/loss")] == list(range(18))
    assert not (run / "checkpoints" / "on_exception.ckpt").exists()  # removed after success
    # the killed run's steps 12-13 were logged again, and the raw files hold them once
    # (Lightning itself writes `epoch` twice at an epoch's last step: with train/* and val/*)
    assert raw_duplicates(run) == raw_duplicates(tmp_path / "straight")


@pytest.mark.slow
def test_slurm_signal_saves_hpc_checkpoint_requeues_and_the_requeued_job_resumes(tmp_path):
    """Lightning's SLURMEnvironment on a (faked) one-task job: SIGUSR1 saves
    hpc_ckpt_1.ckpt and calls `scontrol requeue <job id>`; the job is then killed, and
    the requeued job (same command, ckpt_path=null) resumes from that checkpoint."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.args'}\n")
    scontrol.chmod(0o755)
    env = {**SLURM_ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    run = tmp_path / "job"
    job = launch(run, *pause_at(8, tmp_path / "m"), env_extra=env)
    wait_for(tmp_path / "m", job)
    job.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while not (tmp_path / "scontrol.args").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    job.kill()  # SLURM ends the job once it is requeued
    finish(job)
    assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "4242"]
    hpc = torch.load(run / "hpc_ckpt_1.ckpt", weights_only=True)
    assert hpc["global_step"] == 8

    requeued = launch(run, env_extra=env)
    assert finish(requeued) == 0, logs(tmp_path, "job")[-3000:]
    assert f"resuming from {run / 'hpc_ckpt_1.ckpt'}" in logs(tmp_path, "job")
    # Lightning saves inside the signal handler, here during the 8th step's
    # on_train_batch_end: that step's update is in the checkpoint, but its log line
    # (written after the hook) is not; no step is logged twice.
    assert [s for s, _ in scalars(run, "train/loss")] == [*range(7), *range(8, 18)]


# Several validation and test batches (180 digits in batches of 32), so a signal can
# land inside either; the figures of every callback are drawn at epochs 0 and 2.
EVAL_BATCHES = ["data.eval_batch_size=32"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    proc = launch(run, *EVAL_BATCHES)
    assert finish(proc) == 0, logs(run.parent, "run")[-3000:]
    return run


def assert_shows_what_the_uninterrupted_run_shows(run: Path, straight: Path) -> None:
    shown, expected = shown_steps(run), shown_steps(straight)
    assert ("images", "viz/images/reconstructions") in expected
    assert ("histograms", "viz/latent/sum_log_det") in expected
    assert ("scalars", "val/latent/active_units_z0") in expected
    assert ("scalars", "zz_diagnose/active_units_zK") in expected  # the end-of-fit report
    assert shown == expected
    for tag in ("train/loss", "val/neg_elbo", "zz_test/nll", "val/latent/kl_q0",
                "zz_diagnose/flow_gain_nats"):
        assert scalars(run, tag) == scalars(straight, tag), tag
    assert raw_duplicates(run) == raw_duplicates(straight)


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "epoch", "how"), [
    ("validation", 0, signal.SIGTERM), ("validation", 2, signal.SIGTERM),
    ("test", 0, signal.SIGTERM), ("validation", 1, signal.SIGKILL), ("test", 0, signal.SIGKILL)])
def test_kill_during_evaluation_loses_no_figures(stage, epoch, how, uninterrupted, tmp_path):
    """SIGTERM or SIGKILL after the 2nd of 6 validation (or test) batches, then
    ckpt_path=last: TensorBoard shows the same (tag, step) pairs as the uninterrupted
    run: scalars, images and histograms, the epoch's figures and the HParams metrics
    included."""
    run = tmp_path / "run"
    first = launch(run, *EVAL_BATCHES, *pause_in(stage, 1, tmp_path / "m", epoch))
    wait_for(tmp_path / "m", first)
    first.send_signal(how)
    assert finish(first) == (143 if how == signal.SIGTERM else -how), \
        logs(tmp_path, "run")[-3000:]
    second = launch(run, *EVAL_BATCHES, "ckpt_path=last")
    assert finish(second) == 0, logs(tmp_path, "run")[-3000:]
    assert_shows_what_the_uninterrupted_run_shows(run, uninterrupted)


# In-process runs of train() on the real conf/: 4 steps an epoch.
SHORT = ["trainer.limit_train_batches=4", "trainer.log_every_n_steps=1",
         "trainer.enable_progress_bar=false", "~callbacks.progress_bar", "~callbacks.images",
         "~callbacks.latent", "~callbacks.projector", "trainer.enable_model_summary=false",
         "test.num_samples=5"]


def checkpoint_files(run: Path) -> set[str]:
    return {p.name for p in (run / "checkpoints").glob("*.ckpt")}


def test_copied_run_folder_resumes_twice_from_its_newest_checkpoint(compose_cfg, tmp_path):
    """cp -r RUN moved; resume moved twice: each resume continues from the newest
    checkpoint, every checkpoint is written inside moved/ (no last-v1.ckpt beside the
    copied last.ckpt), and the final test scores moved/'s best checkpoint."""
    original = tmp_path / "original"
    train(compose_cfg([*SHORT, "trainer.max_epochs=2"], output_dir=original))
    moved = tmp_path / "moved"
    shutil.copytree(original, moved)
    for epochs in (3, 4):
        train(compose_cfg([*SHORT, f"trainer.max_epochs={epochs}", "ckpt_path=last"],
                          output_dir=moved))
        last = torch.load(moved / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["global_step"] == 4 * epochs
        assert checkpoint_files(moved) == {"last.ckpt", f"epoch_{epochs - 1:03d}.ckpt"}
        (state,) = [v for v in last["callbacks"].values() if "best_model_path" in v]
        assert Path(state["dirpath"]) == moved / "checkpoints"
        assert Path(state["best_model_path"]).parent == moved / "checkpoints"
        assert Path(state["last_model_path"]) == moved / "checkpoints" / "last.ckpt"
    # the original folder is untouched
    assert torch.load(original / "checkpoints" / "last.ckpt",
                      weights_only=True)["global_step"] == 8
    assert checkpoint_files(original) == {"last.ckpt", "epoch_001.ckpt"}


def test_run_saved_by_lightnings_own_model_checkpoint_resumes_into_its_files(
        compose_cfg, tmp_path):
    """A run whose checkpoints hold the state of Lightning's ModelCheckpoint (runs from
    before RunFolderCheckpoint) resumes that state: last.ckpt is overwritten and the old
    best pruned, no last-v1.ckpt beside them."""
    run = tmp_path / "run"
    plain = "callbacks.model_checkpoint._target_=pytorch_lightning.callbacks.ModelCheckpoint"
    train(compose_cfg([*SHORT, "trainer.max_epochs=1", plain], output_dir=run))
    assert any(k.startswith("ModelCheckpoint{") for k in torch.load(
        run / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"])
    train(compose_cfg([*SHORT, "trainer.max_epochs=2", "ckpt_path=last"], output_dir=run))
    assert checkpoint_files(run) == {"last.ckpt", "epoch_001.ckpt"}
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8


def test_last_is_the_highest_global_step_whatever_the_file_name(tmp_path):
    """A folder that an older version left with last.ckpt (epoch 3) and the newer
    last-v1.ckpt (epoch 4), copied so that their times say nothing."""
    stale = fake_checkpoint(tmp_path / "checkpoints" / "last.ckpt", 1.0, step=69)
    newer = fake_checkpoint(tmp_path / "checkpoints" / "last-v1.ckpt", 2.0, age_s=60, step=92)
    fake_checkpoint(tmp_path / "checkpoints" / "epoch_003.ckpt", 3.0, step=92)
    assert resolve_resume("last", tmp_path) == newer
    stale.write_bytes(b"truncated")  # an unreadable file is passed over, not fatal
    fake_checkpoint(tmp_path / "checkpoints" / "last-v1.ckpt", float("nan"), step=92)
    assert resolve_resume("last", tmp_path) == tmp_path / "checkpoints" / "epoch_003.ckpt"


class RecordLearningRate(pl.Callback):
    """Every step's learning rate and Adam step count, as the optimizer runs it."""

    seen: list[tuple[float, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        optimizer = trainer.optimizers[0]
        state = optimizer.state[optimizer.param_groups[0]["params"][0]]
        RecordLearningRate.seen.append((optimizer.param_groups[0]["lr"],
                                        float(state["step"]) if "step" in state else 0.0))


def test_changed_optimizer_settings_apply_on_resume_and_are_recorded(compose_cfg, tmp_path,
                                                                       caplog):
    run = tmp_path / "run"
    train(compose_cfg([*SHORT, "trainer.max_epochs=1"], output_dir=run))
    RecordLearningRate.seen = []
    with caplog.at_level(logging.WARNING, logger="nfvae.checkpoints"):
        metrics = train(compose_cfg([
            *SHORT, "trainer.max_epochs=2", "ckpt_path=last", "optimizer.lr=2e-4",
            "+optimizer.betas=[0.8,0.99]",
            "+callbacks.lr._target_=test_resume.RecordLearningRate"], output_dir=run))
    assert "optimizer.lr changed from 0.001 to 0.0002" in caplog.text
    # the resumed steps ran with the new settings, on Adam's restored moments (step 4 on)
    assert RecordLearningRate.seen == [(pytest.approx(2e-4), float(s)) for s in range(4, 8)]
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    (group,) = last["optimizer_states"][0]["param_groups"]
    assert group["lr"] == pytest.approx(2e-4) and tuple(group["betas"]) == (0.8, 0.99)
    assert last["hyper_parameters"]["optimizer"]["lr"] == pytest.approx(2e-4)
    assert last["hyper_parameters"]["optimizer"]["betas"] == [0.8, 0.99]
    # what TensorBoard's HParams tab records is what ran
    events = read_events(run)
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["optimizer.lr"].number_value == pytest.approx(2e-4)
    assert torch.isfinite(torch.tensor(metrics["val/neg_elbo"]))


def test_another_optimizer_on_resume_is_refused_before_anything_runs(compose_cfg, tmp_path):
    run = tmp_path / "run"
    train(compose_cfg([*SHORT, "trainer.max_epochs=1", "test.enabled=false"], output_dir=run))
    before = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()}
    with pytest.raises(CheckpointError, match=r"optimizer\._target_ is 'torch\.optim\.Adam' "
                       r"in the checkpoint but 'torch\.optim\.Adamax'.*cannot continue"):
        train(compose_cfg([*SHORT, "trainer.max_epochs=2", "ckpt_path=last",
                           "optimizer=adamax"], output_dir=run))
    assert {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()} == before
