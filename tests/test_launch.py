"""Cluster launches: the SLURM launcher config, Lightning's view of a SLURM job, and a
real sweep through submitit's local executor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]


def compose_with_hydra(overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def sbatch_script(cfg, folder: Path) -> str:
    """The sbatch file hydra-submitit-launcher would submit for this config (its own
    mapping of launcher params to submitit's executor, without a cluster)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    launcher = instantiate(cfg.hydra.launcher)
    params = dict(launcher.params)
    executor = submitit.AutoExecutor(cluster="slurm", folder=folder,
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    params.pop("submitit_folder")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return executor._executor._make_submission_file_text("python -u train.py", "uid")


def test_slurm_launcher_follows_the_trainer_and_hands_the_signal_to_lightning(tmp_path,
                                                                             monkeypatch):
    # submitit's executor insists on finding srun; it is never run here.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    cfg = compose_with_hydra(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                              "trainer.num_nodes=2", "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    script = sbatch_script(cfg, tmp_path)
    for line in ("#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --nodes=2", "#SBATCH --partition=gpu", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --signal=USR1@120", "#SBATCH --requeue"):
        assert line in script.splitlines(), f"{line!r} not in\n{script}"
    assert "USR2" not in script  # submitit's own handler would not requeue with state
    # Lightning's SLURM environment requeues on that very signal.
    from lightning_fabric.plugins.environments import SLURMEnvironment
    assert SLURMEnvironment().requeue_signal == getattr(signal, "SIG" + "USR1")


SLURM_TASK = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1",
              "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "77", "SLURM_PROCID": "1",
              "SLURM_LOCALID": "1", "SLURM_NODEID": "0", "SLURM_NODELIST": "node[07-08]"}


def test_lightning_sees_the_slurm_job(monkeypatch, compose_cfg):
    from lightning_fabric.plugins.environments import SLURMEnvironment

    for name, value in SLURM_TASK.items():
        monkeypatch.setenv(name, value)
    trainer = instantiate(compose_cfg(["trainer=ddp_cpu"]).trainer)
    environment = trainer.strategy.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue
    assert environment.creates_processes_externally  # srun started the tasks, not Lightning
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank) == (2, 1, 1)
    assert environment.main_address == "node07"


def test_tasks_per_node_not_matching_devices_fails_before_training(monkeypatch, compose_cfg,
                                                                   tmp_path):
    from nfvae.training import train

    for name, value in {**SLURM_TASK, "SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "4"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=r"devices=2.*--ntasks-per-node=4"):
        train(compose_cfg(["trainer=ddp_cpu"]))
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_sweep_through_submitit_local_executor(tmp_path):
    quick = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
             "trainer.enable_progress_bar=false", "~callbacks.progress_bar", "~callbacks.images",
             "trainer.enable_model_summary=false", "test.num_samples=5"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=submitit_local",
         "hydra.sweep.dir=sweep", "hydra.launcher.timeout_min=10", "flow=planar,radial",
         *quick], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    for job, flow in enumerate(("planar", "radial")):
        run = tmp_path / "sweep" / str(job)
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert f"name: {flow}" in (run / ".hydra" / "config.yaml").read_text()
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))  # submitit ran them
