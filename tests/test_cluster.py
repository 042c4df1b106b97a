"""Cluster launches on a real SLURM: ``python train.py -m hydra/launcher=slurm ...``
submitted through hydra-submitit-launcher to slurmctld, run by slurmd under srun.

These run only where ``sinfo`` answers (``bash scripts/slurm_up.sh`` brings up a
single-node cluster on 127.0.0.1; ``bash scripts/ci_cluster.sh`` does that and runs
them); elsewhere they skip. Every job is tiny (digits, a few steps, CPU).
"""

from __future__ import annotations

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

from tests_support import read_events

ROOT = Path(__file__).resolve().parents[1]


def _sinfo_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h", "-p", "debug"], capture_output=True,
                              timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [
    pytest.mark.cluster,
    # scripts/ci_cluster.sh sets NFVAE_REQUIRE_CLUSTER: there a silent skip would be a pass.
    pytest.mark.skipif(not os.environ.get("NFVAE_REQUIRE_CLUSTER") and not _sinfo_answers(),
                       reason="no SLURM answers here (sinfo): bring up a local one with "
                              "`bash scripts/slurm_up.sh` (root), then `pytest -m cluster`"),
]

QUICK = ["trainer.max_epochs=1", "trainer.limit_train_batches=3",
         "trainer.enable_progress_bar=false", "~callbacks.progress_bar",
         "trainer.enable_model_summary=false", "test.num_samples=5"]
LAUNCH = ["hydra/launcher=slurm", "hydra.launcher.partition=debug",
          "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=15"]


class SlurmRankRecorder(pl.Callback):
    """Writes, per rank, what SLURM told the task and what Lightning made of it."""

    def __init__(self, out: str):
        self.out = Path(out)

    def on_train_start(self, trainer, pl_module):
        environment = trainer.strategy.cluster_environment
        record = {
            "global_rank": trainer.global_rank, "local_rank": trainer.local_rank,
            "node_rank": trainer.node_rank, "world_size": trainer.world_size,
            "environment": type(environment).__name__,
            "creates_processes_externally": environment.creates_processes_externally,
            "main_address": environment.main_address, "pid": os.getpid(),
            **{k: os.environ.get(k) for k in ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID",
                                              "SLURM_JOB_ID", "SLURMD_NODENAME")}}
        self.out.mkdir(parents=True, exist_ok=True)
        task = os.environ.get("SLURM_ARRAY_TASK_ID", "0")
        (self.out / f"{task}_rank{trainer.global_rank}.txt").write_text(repr(record))


class WaitForSignalAtStep(pl.Callback):
    """At a global step of the job's first run, write a marker and wait (at most two
    minutes) for the scheduler's signal, so the test preempts the job at a known step
    as a scheduler would at an unknown one. A requeued run (marker present) goes on."""

    def __init__(self, step: int, marker: str):
        self.step, self.marker, self.armed = step, Path(marker), False

    def on_train_start(self, trainer, pl_module):
        # decided once, so that no rank sees rank 0's marker and runs on alone
        self.armed = not self.marker.exists()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and self.armed:
            if trainer.is_global_zero:
                self.marker.write_text(os.environ.get("SLURM_JOB_ID", ""))
            deadline = time.monotonic() + 120
            while not trainer.received_sigterm and time.monotonic() < deadline:
                time.sleep(0.05)


def env() -> dict:
    # The job's Python runs `-m submitit.core._submit` from the submission folder, so
    # its sys.path does not start at the checkout as `python train.py` does: point it there.
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"),
                                           os.environ.get("PYTHONPATH", "")])}


def submit(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    log = open(tmp_path / "submitter.log", "w")  # noqa: SIM115
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), "-m", *LAUNCH,
                             f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides],
                            cwd=tmp_path, env=env(), stdout=log, stderr=subprocess.STDOUT,
                            text=True)


def submitter_log(tmp_path: Path) -> str:
    return (tmp_path / "submitter.log").read_text()


def array_id(tmp_path: Path, timeout: float = 120) -> str:
    """The SLURM job id of the sweep: submitit's folder that holds the sbatch script
    (a sweep of several jobs is one array, job n being task <id>_n; one job is no array)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scripts = list((tmp_path / "sweep" / ".submitit").glob("*/*_submission.sh"))
        if scripts:
            return scripts[0].parent.name
        time.sleep(0.5)
    raise AssertionError(f"no job submitted:\n{submitter_log(tmp_path)[-3000:]}")


def states(job: str) -> dict[str, str]:
    """sacct's state of each array task of a job: {"12_0": "COMPLETED", ...}."""
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job, "-o", "JobID,State"],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("|")[:2] for line in out.splitlines() if line)


def wait_states(job: str, done: set[str], count: int, timeout: float = 600) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = states(job)
        if len(now) == count and all(s.split()[0] in done for s in now.values()):
            return now
        time.sleep(2)
    raise AssertionError(f"job {job} did not reach {done}: {states(job)}")


def job_log(tmp_path: Path, job: str, task: int, rank: int = 0, stream: str = "err") -> str:
    """submitit's per-task log: sweep/.submitit/<array>_<task>/<array>_<task>_<rank>_log.*"""
    name = f"{job}_{task}"
    return (tmp_path / "sweep" / ".submitit" / name / f"{name}_{rank}_log.{stream}").read_text()


def last_scalar(run: Path, tag: str) -> float:
    return read_events(run).Scalars(tag)[-1].value


def single_process_val(ckpt: Path) -> float:
    from nfvae.loading import load_module
    from nfvae.tasks.common import build_datamodule

    module = load_module(ckpt)
    single = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    return single.validate(module, datamodule=build_datamodule(module.hparams.data),
                           verbose=False)[0]["val/neg_elbo"]


def test_ddp_sweep_runs_two_jobs_with_ranks_from_srun(tmp_path):
    ranks = tmp_path / "ranks"
    proc = submit(tmp_path, "trainer=ddp_cpu", "flow=none,planar", *QUICK,
                  "+callbacks.ranks._target_=test_cluster.SlurmRankRecorder",
                  f"+callbacks.ranks.out={ranks}")
    assert proc.wait(timeout=900) == 0, submitter_log(tmp_path)[-4000:]
    job = array_id(tmp_path)
    # The submitter returns once the results are written; the tasks end just after.
    assert wait_states(job, {"COMPLETED", "FAILED", "CANCELLED"}, 2, timeout=120) == {
        f"{job}_0": "COMPLETED", f"{job}_1": "COMPLETED"}
    script = (tmp_path / "sweep" / ".submitit" / job / f"{job}_submission.sh").read_text()
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --ntasks-per-node=2", "#SBATCH --nodes=1",
                 "#SBATCH --partition=debug", "#SBATCH --signal=USR1@120", "#SBATCH --requeue"):
        assert line in script.splitlines(), f"{line!r} not in\n{script}"
    assert "--gpus" not in script  # a CPU job asks for no GPU (SLURM would refuse it)

    for task, flow in enumerate(("none", "planar")):
        run = tmp_path / "sweep" / str(task)
        assert f"name: {flow}" in (run / ".hydra" / "config.yaml").read_text()
        # srun started both tasks; Lightning took rank and world size from SLURM.
        records = [eval((ranks / f"{task}_rank{r}.txt").read_text()) for r in (0, 1)]
        for rank, record in enumerate(records):
            assert record["environment"] == "SLURMEnvironment"
            assert record["creates_processes_externally"]
            assert (record["global_rank"], record["world_size"]) == (rank, 2)
            assert record["SLURM_PROCID"] == record["SLURM_LOCALID"] == str(rank)
            assert record["SLURM_JOB_ID"] == records[0]["SLURM_JOB_ID"]
        assert records[0]["pid"] != records[1]["pid"]
        assert f"global_rank={1}(2)" in job_log(tmp_path, job, task, rank=1, stream="out")
        # Lightning's line (stdout or stderr, as logging is routed) from rank 1's task
        assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (job_log(tmp_path, job, task, rank=1)
                                                 + job_log(tmp_path, job, task, 1, "out"))
        # The run folder: checkpoints, events (rank 0 alone), Hydra's log.
        assert {p.name for p in (run / "checkpoints").iterdir()} == {"epoch_000.ckpt",
                                                                     "last.ckpt"}
        events = list((run / "tensorboard").glob("events.out.tfevents.*"))
        assert len({e.name.split(".")[-2] for e in events}) == 1, "one writer process"
        assert (run / "train.log").is_file()
        # Logged validation figure = one process validating the same weights.
        val = single_process_val(run / "checkpoints" / "last.ckpt")
        logged = last_scalar(run, "val/neg_elbo")
        assert abs(logged - val) <= 1e-6 * abs(val), (flow, logged, val)


def test_preempted_job_saves_hpc_checkpoint_requeues_and_resumes_to_the_same_result(tmp_path):
    """Two identical DDP jobs; the second gets SIGUSR1 from `scancel --signal=USR1` at
    step 8 of 12 (mid-epoch 1). Lightning saves hpc_ckpt_1.ckpt and requeues the job;
    the requeued job resumes in the same run folder and ends where the first one did."""
    (tmp_path / "paused_0_0").write_text("the first job runs through")
    proc = submit(tmp_path, "trainer=ddp_cpu", "seed=42,42", *QUICK, "trainer.max_epochs=2",
                  "trainer.limit_train_batches=6", "trainer.log_every_n_steps=1",
                  "trainer.deterministic=true",
                  "+callbacks.pause._target_=test_cluster.WaitForSignalAtStep",
                  "+callbacks.pause.step=8",
                  # only the second job pauses: its own marker name holds its job number
                  f"+callbacks.pause.marker={tmp_path}/paused_${{hydra:job.num}}_0")
    job = array_id(tmp_path)
    deadline = time.monotonic() + 600
    while not (tmp_path / "paused_1_0").exists():
        assert proc.poll() is None, submitter_log(tmp_path)[-4000:]
        assert time.monotonic() < deadline, "the job did not reach step 8"
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR1", f"{job}_1"], check=True)
    assert proc.wait(timeout=900) == 0, submitter_log(tmp_path)[-4000:]
    wait_states(job, {"COMPLETED", "FAILED", "CANCELLED"}, 2, timeout=120)

    run, straight = tmp_path / "sweep" / "1", tmp_path / "sweep" / "0"
    log = job_log(tmp_path, job, 1)
    assert "Handling auto-requeue signal" in log + job_log(tmp_path, job, 1, stream="out")
    hpc = torch.load(run / "hpc_ckpt_1.ckpt", weights_only=True)
    assert hpc["global_step"] == 8
    assert "resuming from" in (run / "train.log").read_text()
    requeues = subprocess.run(["sacct", "-n", "-P", "-X", "-D", "-j", f"{job}_1", "-o", "State"],
                              capture_output=True, text=True, check=True).stdout.split()
    assert requeues[0] == "REQUEUED" and requeues[-1] == "COMPLETED", requeues

    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (1, 12)
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name
    for i, state in a["optimizer_states"][0]["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value),
                               torch.as_tensor(b["optimizer_states"][0]["state"][i][key])), key
    tags = lambda events: {(tag, e.step) for kind in ("scalars", "images")  # noqa: E731
                           for tag in events.Tags()[kind]
                           for e in getattr(events, kind.capitalize())(tag)}
    assert tags(read_events(run)) == tags(read_events(straight))


def test_a_failing_job_is_a_failed_entry_and_the_other_job_finishes(tmp_path):
    proc = submit(tmp_path, "flow.num_layers=-1,2", *QUICK)
    assert proc.wait(timeout=900) != 0
    job = array_id(tmp_path)
    assert wait_states(job, {"COMPLETED", "FAILED", "CANCELLED"}, 2, timeout=600) == {
        f"{job}_0": "FAILED", f"{job}_1": "COMPLETED"}
    # The failed job's log ends with train.py's one-paragraph error; the submitter
    # names the failed job and shows that log's tail.
    assert "train.py: error: flow.num_layers must be >= 0, got -1" in job_log(tmp_path, job, 0)
    assert "flow.num_layers must be >= 0, got -1" in submitter_log(tmp_path)
    assert (tmp_path / "sweep" / "1" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "sweep" / "0" / "checkpoints").exists()


def processes_of(job: str) -> list[str]:
    """Processes on this host that belong to a SLURM job (its id in their environment)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"SLURM_ARRAY_JOB_ID={job}".encode() in environ:
            found.append(f"{proc.name}: {cmd}")
    return found


def test_scancel_of_a_sweep_leaves_no_process_and_no_corrupt_checkpoint(tmp_path):
    from nfvae.checkpoints import read_checkpoint

    proc = submit(tmp_path, "flow=planar,radial", *QUICK, "trainer.max_epochs=200",
                  "trainer.limit_val_batches=1", "test.enabled=false")
    job = array_id(tmp_path)
    deadline = time.monotonic() + 600
    while not all((tmp_path / "sweep" / str(t) / "checkpoints" / "last.ckpt").exists()
                  for t in (0, 1)):
        assert proc.poll() is None, submitter_log(tmp_path)[-4000:]
        assert time.monotonic() < deadline, states(job)
        time.sleep(0.5)
    assert set(states(job).values()) == {"RUNNING"}
    assert processes_of(job)
    subprocess.run(["scancel", job], check=True)
    assert wait_states(job, {"CANCELLED"}, 2, timeout=120)
    # The submitter learns it from sacct and stops with an error instead of waiting.
    assert proc.wait(timeout=300) != 0
    deadline = time.monotonic() + 60
    while processes_of(job) and time.monotonic() < deadline:
        time.sleep(1)
    assert not processes_of(job), processes_of(job)
    checkpoints = list((tmp_path / "sweep").glob("*/checkpoints/*.ckpt"))
    assert len(checkpoints) >= 2
    for path in checkpoints:
        read_checkpoint(path)  # a truncated file raises CheckpointError


def test_two_node_job_takes_node_and_global_ranks_from_slurm(tmp_path):
    """trainer.num_nodes=2, one task each, on the `pair` partition (two slurmd on this
    host, scripts/slurm_up.sh)."""
    ranks = tmp_path / "ranks"
    proc = submit(tmp_path, "hydra.launcher.partition=pair", "trainer=ddp_cpu",
                  "trainer.devices=1", "trainer.num_nodes=2", *QUICK,
                  "+callbacks.ranks._target_=test_cluster.SlurmRankRecorder",
                  f"+callbacks.ranks.out={ranks}")
    assert proc.wait(timeout=900) == 0, submitter_log(tmp_path)[-4000:]
    job = array_id(tmp_path)
    script = (tmp_path / "sweep" / ".submitit" / job / f"{job}_submission.sh").read_text()
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=1" in script
    assert wait_states(job, {"COMPLETED", "FAILED", "CANCELLED"}, 1, timeout=120) == {
        job: "COMPLETED"}
    records = [eval((ranks / f"0_rank{r}.txt").read_text()) for r in (0, 1)]
    for rank, record in enumerate(records):
        assert (record["global_rank"], record["local_rank"], record["node_rank"],
                record["world_size"]) == (rank, 0, rank, 2)
        assert record["SLURMD_NODENAME"] == f"n{rank + 1}"
        assert record["main_address"] == "n1"
    assert (tmp_path / "sweep" / "0" / "checkpoints" / "last.ckpt").is_file()
