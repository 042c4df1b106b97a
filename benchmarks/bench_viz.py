"""What the visual callbacks cost: the time of a training epoch (training steps,
validation and the callbacks that run after it) with and without them.

    .venv/bin/python benchmarks/bench_viz.py                 # 3 rounds of 3-epoch runs
    .venv/bin/python benchmarks/bench_viz.py --only digits --rounds 5

Per setup, two runs: without visual callbacks, and with every visual callback of
its config drawing every epoch, each timed inside its hook. The hook times give
the cost of one drawing, unaffected by the run-to-run noise of a shared machine;
a callback that draws every n-th epoch (its conf/callbacks/*.yaml default) adds
cost / n to an average epoch of a long run, the last column. One thread
(torch.set_num_threads(1)); the runs are interleaved within each round; medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.loggers import TensorBoardLogger

from common import compose  # benchmarks/common.py, beside this script

from nfvae.training import build_datamodule, build_module

ROOT = Path(__file__).resolve().parents[1]
VISUAL = ("images", "latent", "projector", "density")


class EpochTimer(pl.Callback):
    """Wall time from the start of one training epoch to the start of the next (or the
    end of fitting): the steps, the validation and every callback in between."""

    def __init__(self):
        self.starts: list[float] = []
        self.end = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self.starts.append(time.perf_counter())

    def on_fit_end(self, trainer, pl_module):
        self.end = time.perf_counter()

    @property
    def epoch_times(self) -> list[float]:
        marks = [*self.starts, self.end]
        return [b - a for a, b in zip(marks, marks[1:])]


def compose_cfg(overrides: list[str], out: str):
    return compose([f"paths.output_dir={out}", *overrides])


class Timed(pl.Callback):
    """Runs a visual callback's hook (they draw in on_validation_epoch_end) and times it."""

    def __init__(self, inner: pl.Callback):
        self.inner = inner
        self.seconds: list[float] = []

    def on_validation_epoch_end(self, trainer, pl_module):
        start = time.perf_counter()
        self.inner.on_validation_epoch_end(trainer, pl_module)
        self.seconds.append(time.perf_counter() - start)


def run(base: list[str], visual: bool, epochs: int) -> tuple[float, dict[str, float]]:
    """Mean epoch time, and {callback: median seconds per drawing} with every visual
    callback drawing every epoch (``visual``) or none."""
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_cfg(base, out)
        pl.seed_everything(0, workers=True)
        datamodule = build_datamodule(cfg.data)
        module = build_module(cfg, datamodule.data_shape)
        timed = {name: Timed(instantiate(node, every_n_epochs=1))
                 for name, node in cfg.callbacks.items() if visual and name in VISUAL}
        timer = EpochTimer()
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs,
                             logger=TensorBoardLogger(out, name="tb", version=""),
                             callbacks=[*timed.values(), timer], enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0,
                             log_every_n_steps=cfg.trainer.log_every_n_steps)
        trainer.fit(module, datamodule=datamodule)
        draws = {name: statistics.median(t.seconds) for name, t in timed.items()}
        return statistics.mean(timer.epoch_times), draws


def visual_callbacks(overrides: list[str]) -> dict[str, int]:
    """{name: default every_n_epochs} of the visual callbacks the setup's config has."""
    cfg = compose_cfg(overrides, tempfile.gettempdir())
    return {name: int(node.every_n_epochs) for name, node in cfg.callbacks.items()
            if name in VISUAL}


DATA_DIR = ROOT.parent / "shared" / "data"
MNIST = ["data=mnist", f"data.data_dir={DATA_DIR}", "data.download=false"]
SETUPS = {
    "digits VAE, D=8, planar K=4": ["flow=planar", "flow.num_layers=4"],
    "digits VAE, D=2, planar K=8": ["model.latent_dim=2", "flow=planar", "flow.num_layers=8"],
    "MNIST VAE, D=8, planar K=4": [*MNIST, "flow=planar", "flow.num_layers=4"],
    "toy U1, planar K=32, 100 steps/epoch": ["experiment=toy/u1", "flow=planar",
                                             "flow.num_layers=32"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None,
                        help="substrings of the setups to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    setups = {name: overrides for name, overrides in SETUPS.items()
              if not args.only or any(part in name for part in args.only)}
    if not (DATA_DIR / "MNIST" / "raw").is_dir():
        setups = {k: v for k, v in setups.items() if "MNIST" not in k}
        print(f"MNIST not found under {DATA_DIR}: skipping its setup")
    plain = {setup: [] for setup in setups}
    drawn = {setup: [] for setup in setups}
    draws = {setup: {} for setup in setups}
    for r in range(args.rounds):
        for setup, overrides in setups.items():
            plain[setup].append(run(overrides, False, args.epochs)[0])
            epoch, costs = run(overrides, True, args.epochs)
            drawn[setup].append(epoch)
            for name, cost in costs.items():
                draws[setup].setdefault(name, []).append(cost)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    print(f"\nseconds per training epoch (steps + validation + callbacks), median of "
          f"{args.rounds} rounds of {args.epochs}-epoch runs, 1 thread")
    print(f"{'setup':38s} {'no visuals':>10s} {'all, each epoch':>16s}   {'callback':10s} "
          f"{'per draw':>9s} {'every n':>8s} {'overhead':>9s}")
    for setup in setups:
        base = statistics.median(plain[setup])
        every = statistics.median(drawn[setup])
        defaults = visual_callbacks(setups[setup])
        total = 0.0
        lead = f"{setup:38s} {base:9.3f}s {every:15.3f}s  "
        for name, costs in draws[setup].items():
            cost = statistics.median(costs)
            share = cost / defaults[name] / base
            total += share
            print(f"{lead} {name:10s} {cost:8.3f}s {defaults[name]:8d} {share:8.1%}")
            lead = " " * len(lead)
        print(f"{lead} {'all':10s} {'':9s} {'defaults':>8s} {total:8.1%}")


if __name__ == "__main__":
    main()
