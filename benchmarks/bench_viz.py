"""What the visual callbacks cost: the time of a training epoch (training steps,
validation and the callbacks that run after it) with and without them.

    .venv/bin/python benchmarks/bench_viz.py            # 3 rounds of 3-epoch runs
    .venv/bin/python benchmarks/bench_viz.py --rounds 5 --epochs 4

Per setup, runs without visual callbacks and with each visual callback alone,
drawing every epoch; the difference is the cost of one drawing. A callback that
draws every n-th epoch (its conf/callbacks/*.yaml default) adds that cost / n to
an average epoch of a long run: the last column, summed over the callbacks.
One thread (torch.set_num_threads(1)); the runs are interleaved within each round
so that a machine busy with other work slows all of them alike; medians over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from pytorch_lightning.loggers import TensorBoardLogger

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
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={out}", *overrides])


def epoch_seconds(base: list[str], visual: str | None, epochs: int) -> float:
    """Mean epoch time of one run with the visual callback ``visual`` alone, drawing every
    epoch (None: no visual callback)."""
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_cfg(base, out)
        pl.seed_everything(0, workers=True)
        datamodule = build_datamodule(cfg.data)
        module = build_module(cfg, datamodule.data_shape)
        callbacks = [] if visual is None else [
            instantiate(cfg.callbacks[visual], every_n_epochs=1)]
        timer = EpochTimer()
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs,
                             logger=TensorBoardLogger(out, name="tb", version=""),
                             callbacks=[*callbacks, timer], enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0, log_every_n_steps=10)
        trainer.fit(module, datamodule=datamodule)
        return statistics.mean(timer.epoch_times)


def visual_callbacks(overrides: list[str]) -> dict[str, int]:
    """{name: default every_n_epochs} of the visual callbacks the setup's config has."""
    cfg = compose_cfg(overrides, tempfile.gettempdir())
    return {name: int(node.every_n_epochs) for name, node in cfg.callbacks.items()
            if name in VISUAL}


SETUPS = {
    "digits VAE, D=8, planar K=4": ["flow=planar", "flow.num_layers=4"],
    "digits VAE, D=2, planar K=8": ["model.latent_dim=2", "flow=planar", "flow.num_layers=8"],
    "toy U1, planar K=32, 100 steps/epoch": ["experiment=toy/u1", "flow=planar",
                                             "flow.num_layers=32"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = {setup: [None, *visual_callbacks(overrides)] for setup, overrides in SETUPS.items()}
    times = {(setup, visual): [] for setup, visuals in runs.items() for visual in visuals}
    for r in range(args.rounds):
        for setup, visuals in runs.items():
            for visual in visuals:
                times[(setup, visual)].append(epoch_seconds(SETUPS[setup], visual, args.epochs))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    print(f"\nseconds per training epoch (steps + validation + callbacks), median of "
          f"{args.rounds} rounds of {args.epochs}-epoch runs, 1 thread")
    print(f"{'setup':38s} {'callback':10s} {'epoch':>8s} {'draw cost':>10s} {'every n':>8s} "
          f"{'overhead':>9s}")
    for setup, visuals in runs.items():
        base = statistics.median(times[(setup, None)])
        defaults = visual_callbacks(SETUPS[setup])
        print(f"{setup:38s} {'(none)':10s} {base:7.3f}s")
        total = 0.0
        for visual in visuals[1:]:
            value = statistics.median(times[(setup, visual)])
            cost = max(0.0, value - base)
            share = cost / defaults[visual] / base
            total += share
            print(f"{'':38s} {visual:10s} {value:7.3f}s {cost:9.3f}s {defaults[visual]:8d} "
                  f"{share:8.1%}")
        print(f"{'':38s} {'all, at their defaults: +' + format(total, '.1%') + ' per epoch':s}")


if __name__ == "__main__":
    main()
