"""Where the framework's per-step time goes, against the plain loop of bench_train.py.

Short fits of the bench_train.py model (MNIST, MLP 784-300-300, latent 64, amortized
planar K=10, batch 100, Adam 1e-3, one thread), interleaved over rounds; the time
per step inside the training epoch (Trainer start-up excluded), median over rounds:

* plain:      the plain loop of bench_train.py;
* framework:  nfvae's Trainer path as configured (FlowVAEModule, conf/trainer);
* bare step:  the same Trainer, with a training step that only computes the loss
              (no warm-up, logging or finiteness guard);
* barebones:  the bare step under ``Trainer(barebones=True)``, Lightning's leanest
              loop (no logger, callbacks or progress tracking): Lightning's floor.

    .venv/bin/python benchmarks/bench_overhead.py [--steps 150] [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PLANAR_MNIST_OVERRIDES,
    TrainingEpochTimer,
    compose,
    interleaved,
    pin_threads,
    plain_training_steps,
    run_dirs,
    timed,
)

from nfvae.module import FlowVAEModule  # noqa: E402
from nfvae.objectives import negative_elbo  # noqa: E402
from nfvae.training import build_datamodule, build_module, instantiate  # noqa: E402


class BareStep(FlowVAEModule):
    """The loss alone: what any LightningModule of this model has to do."""

    def training_step(self, batch, batch_idx):
        return negative_elbo(self.model(batch[0]), 1.0).loss

    def configure_callbacks(self):
        return []  # no non-finite guard or RNG state (nfvae.callbacks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    pin_threads()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # barebones' banner
    cfg = compose([*run_dirs(args.data_dir, "nfvae-overhead-"), *PLANAR_MNIST_OVERRIDES,
                   "trainer.max_epochs=1", f"trainer.limit_train_batches={args.steps}"])
    torch.manual_seed(0)
    datamodule = build_datamodule(cfg.data)
    x_train = datamodule.split("train")[0]
    reference = build_module(cfg, datamodule.data_shape)

    def copy(cls):
        module = cls(**reference.hparams)
        module.load_state_dict(reference.state_dict())
        return module

    modules = {"framework": copy(FlowVAEModule), "bare step": copy(BareStep),
               "barebones": copy(BareStep)}
    # Seconds per training epoch of args.steps steps, per path.
    epochs: dict[str, list[float]] = {name: [] for name in ("plain", *modules)}

    def fit(name):
        def run() -> float:
            timer = TrainingEpochTimer(epochs[name])
            if name == "barebones":
                trainer = pl.Trainer(barebones=True, accelerator="cpu", devices=1, max_epochs=1,
                                     limit_train_batches=args.steps, limit_val_batches=0,
                                     callbacks=[timer])
            else:
                trainer = instantiate(cfg.trainer, logger=instantiate(cfg.logger),
                                      callbacks=[timer])
            trainer.fit(modules[name], datamodule=datamodule)
            return epochs[name][-1]
        return run

    plain_model = copy(FlowVAEModule).model
    optimizer = torch.optim.Adam(plain_model.parameters(), lr=1e-3)

    def plain() -> float:
        seconds = timed(lambda: plain_training_steps(plain_model, optimizer, x_train,
                                                     args.steps))
        epochs["plain"].append(seconds)
        return seconds

    contenders = {"plain": plain, **{name: fit(name) for name in modules}}
    for run in contenders.values():  # warm-up: first-call costs, allocator
        run()
    for seconds in epochs.values():
        seconds.clear()
    interleaved(contenders, args.rounds, quiet=True)
    per_step = {name: [t / args.steps for t in seconds] for name, seconds in epochs.items()}
    base = statistics.median(per_step["plain"])
    print(f"{args.steps} steps per fit, median of {args.rounds} interleaved rounds")
    print(f"{'path':<11s} {'ms/step':>8s} {'plain/path':>11s} {'overhead ms':>12s}")
    for name in contenders:
        ms = statistics.median(per_step[name]) * 1e3
        print(f"{name:<11s} {ms:8.2f} {base * 1e3 / ms:11.3f} {ms - base * 1e3:12.2f}")


if __name__ == "__main__":
    main()
