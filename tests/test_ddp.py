"""DDP correctness: sharding, per-rank noise, exact reduced figures, rank-0-only writing.

The slow test runs ``python train.py trainer=ddp_cpu`` (two processes, gloo) on the
default digits data, then checks the run against a single process on the same weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from nfvae.data import IndexBatchSampler
from nfvae.evaluation import ExampleNoise, example_elbo, example_nll
from nfvae.loading import load_module
from nfvae.tasks.common import build_datamodule
from nfvae.tasks.nll import nll as nll_task
from nfvae.training import build_module
from tests_support import read_events

ROOT = Path(__file__).resolve().parents[1]


def shards(sampler: IndexBatchSampler, world: int, monkeypatch) -> list[list[torch.Tensor]]:
    """The batches each rank would draw (the rank is what dist would report)."""
    out = []
    for rank in range(world):
        monkeypatch.setattr(IndexBatchSampler, "_rank_and_world",
                            staticmethod(lambda rank=rank: (rank, world)))
        batches = list(sampler)
        assert len(batches) == len(sampler)
        out.append(batches)
    return out


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("num_items", [1437, 180, 2 * 64 * 5 + 1, 4 * 64 * 3 + 3, 5])
def test_ranks_draw_disjoint_shards_covering_the_epoch_in_equal_batch_counts(
        num_items, world, monkeypatch):
    sampler = IndexBatchSampler(num_items, 64, shuffle=True, seed=3)
    sampler.set_epoch(2)
    per_rank = shards(sampler, world, monkeypatch)
    drawn = [torch.cat(batches) for batches in per_rank]
    everything = torch.cat(drawn)
    assert sorted(everything.tolist()) == list(range(num_items)), "each example exactly once"
    assert len({len(batches) for batches in per_rank}) == 1, "same number of batches per rank"
    assert all(len(b) >= 1 for batches in per_rank for b in batches), "no empty batch"
    if world == 1:  # one process: consecutive batches of the seeded permutation
        order = torch.randperm(num_items, generator=torch.Generator().manual_seed(3 + 2))
        assert torch.equal(everything, order)
        assert [len(b) for b in per_rank[0]][:-1] == [64] * (len(per_rank[0]) - 1)


def test_sampler_resumes_after_the_consumed_batches_and_rolls_over_at_the_limit():
    sampler = IndexBatchSampler(500, 64, shuffle=True, seed=0)
    full = list(sampler)
    for _ in range(3):
        sampler.advance(batches_per_epoch=float("inf"))
    resumed = IndexBatchSampler(500, 64, shuffle=True, seed=0)
    resumed.load_state_dict(sampler.state_dict())
    assert [b.tolist() for b in resumed] == [b.tolist() for b in full[3:]]
    # limit_train_batches=5: after the fifth batch the position is the next epoch's start
    for _ in range(2):
        sampler.advance(batches_per_epoch=5)
    assert (sampler.epoch, sampler.consumed) == (1, 0)
    # a changed batch size restarts the interrupted epoch rather than skip other examples
    other = IndexBatchSampler(500, 32, shuffle=True, seed=0)
    other.load_state_dict({**resumed.state_dict(), "consumed": 3})
    assert other.consumed == 0


def test_example_noise_depends_on_the_example_not_the_batch():
    a = ExampleNoise(torch.tensor([7, 3, 11]), dim=5, seed=1, block=4)(0, 10)
    b = ExampleNoise(torch.tensor([3]), dim=5, seed=1, block=4)(0, 10)
    assert torch.equal(a[:, 1], b[:, 0])
    # any split of the sample range gives the same numbers
    noise = ExampleNoise(torch.tensor([7, 3]), dim=5, seed=1, block=4)
    assert torch.equal(torch.cat([noise(0, 3), noise(3, 6), noise(9, 1)]), noise(0, 10))
    assert not torch.equal(a[:, 0], a[:, 1])
    other_seed = ExampleNoise(torch.tensor([3]), dim=5, seed=2, block=4)(0, 10)
    assert not torch.equal(b, other_seed)
    # standard normal: mean ~ 0, variance ~ 1 over many streams
    many = ExampleNoise(torch.arange(2000), dim=4, seed=0, block=1)(0, 1)
    assert abs(float(many.mean())) < 0.05 and abs(float(many.var()) - 1) < 0.05


def test_evaluation_figures_do_not_depend_on_batching(compose_cfg):
    cfg = compose_cfg(["flow.num_layers=2"])
    torch.manual_seed(0)
    model = build_module(cfg, (1, 8, 8)).model.eval()
    x = torch.bernoulli(torch.rand(10, 1, 8, 8))
    index = torch.arange(100, 110)
    whole = example_nll(model, x, index, num_samples=250, seed=0)
    split = torch.cat([example_nll(model, x[:3], index[:3], 250, 0, max_batch_samples=150),
                       example_nll(model, x[3:], index[3:], 250, 0, max_batch_samples=999)])
    torch.testing.assert_close(whole, split, rtol=1e-5, atol=1e-5)
    reordered = example_elbo(model, x.flip(0), index.flip(0))["neg_elbo"].flip(0)
    torch.testing.assert_close(example_elbo(model, x, index)["neg_elbo"], reordered,
                               rtol=1e-5, atol=1e-5)


class IndexRecorder(pl.Callback):
    """Writes, per rank, the example indices of every training batch and a fingerprint
    of the RNG state at the first batch (after the module's per-rank seeding)."""

    def __init__(self, out: str):
        self.out, self.seen, self.rng = Path(out), [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.rng is None:
            self.rng = hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()
        self.seen.append(batch[2].tolist())

    def on_train_epoch_end(self, trainer, pl_module):
        record = {"batches": self.seen, "rng": self.rng, "world": trainer.world_size}
        path = self.out / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.json"
        path.write_text(json.dumps(record))
        self.seen = []


def last_scalar(run: Path, tag: str) -> float:
    return read_events(run).Scalars(tag)[-1].value


@pytest.mark.slow
def test_two_process_ddp_matches_a_single_process(tmp_path, compose_cfg):
    run = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"),
                                                        os.environ.get("PYTHONPATH", "")])}
    args = ["trainer=ddp_cpu", f"hydra.run.dir={run}", "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false", "~callbacks.progress_bar",
            "trainer.enable_model_summary=false", "test.num_samples=20",
            "+callbacks.indices._target_=test_ddp.IndexRecorder",
            f"+callbacks.indices.out={tmp_path}"]
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]

    # Sharding: the two ranks' index sets are disjoint and cover the training split.
    ranks = [json.loads((tmp_path / f"rank{r}_epoch0.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    drawn = [sorted(i for batch in r["batches"] for i in batch) for r in ranks]
    assert not set(drawn[0]) & set(drawn[1])
    assert sorted(drawn[0] + drawn[1]) == list(range(1797 - 180 - 180))
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) == 12  # ceil(1437 / 128)
    # Each rank draws its own binarization and posterior noise.
    assert ranks[0]["rng"] != ranks[1]["rng"]

    # Only rank 0 wrote: one process's event files, one image per validation epoch.
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len({name.name.split(".")[-2] for name in events}) == 1, "one writer process"
    accumulator = read_events(run)
    assert len(accumulator.Images("viz/images/reconstructions")) == 1
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"epoch_000.ckpt", "last.ckpt"}
    # The checkpoint keeps each rank's RNG stream, for an exact resume on two processes.
    rng = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["nfvae"]["rng"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])

    # Logged validation negative ELBO = one process validating the same weights.
    module = load_module(run / "checkpoints" / "last.ckpt")
    datamodule = build_datamodule(module.hparams.data)
    single = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    val = single.validate(module, datamodule=datamodule, verbose=False)[0]["val/neg_elbo"]
    ddp_val = last_scalar(run, "val/neg_elbo")
    assert abs(ddp_val - val) <= 1e-6 * abs(val), (ddp_val, val)  # float32 event rounding

    # The checkpoint gives the same test NLL in one process, in other batch sizes.
    cfg = compose_cfg([f"ckpt_path={run / 'checkpoints' / 'epoch_000.ckpt'}",
                       "eval.num_samples=20", "eval.batch_size=37"],
                      config_name="eval", output_dir=tmp_path / "eval")
    nll = nll_task(cfg)["nll"]
    ddp_nll = last_scalar(run, "zz_test/nll")
    assert abs(ddp_nll - nll) <= 1e-6 * abs(nll), (ddp_nll, nll)
    print(f"DDP vs single process: val/neg_elbo {ddp_val:.7f} vs {val:.7f}, "
          f"test/nll {ddp_nll:.7f} vs {nll:.7f}")


def _actnorm_rank(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    from nfvae.flows import ActNorm

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        torch.manual_seed(rank)  # different data on each rank
        z = torch.randn(5 + 3 * rank, 4) * (rank + 1) + rank
        flow = ActNorm(4)
        flow(z)
        torch.save({"z": z, "log_scale": flow.log_scale.detach(),
                    "shift": flow.shift.detach()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_actnorm_initialises_from_all_ranks_batches_under_ddp(tmp_path):
    """DDP broadcasts parameters only when it wraps the model: ActNorm's data-dependent
    initialisation must give every rank the same parameters, those of the union."""
    world = 2
    torch.multiprocessing.spawn(_actnorm_rank, args=(world, str(tmp_path / "init"),
                                                     str(tmp_path / "out")), nprocs=world)
    saved = [torch.load(tmp_path / f"out.{r}") for r in range(world)]
    union = torch.cat([s["z"] for s in saved])
    std = union.std(0, unbiased=False)
    for s in saved:
        torch.testing.assert_close(s["log_scale"], -std.log())
        torch.testing.assert_close(s["shift"], -union.mean(0) / std)
    assert not torch.allclose(saved[0]["z"].mean(0), union.mean(0))  # ranks' data differ
