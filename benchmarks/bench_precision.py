"""Training speed of ``trainer.precision=bf16-mixed`` and ``training.compile=true`` against
the default (float32, eager), and what bf16 does to the objective.

The model of bench_train.py (MNIST, dynamic binarization, MLP 784-300-300, latent 64,
amortized planar K=10, batch 100, Adam 1e-3), one thread. Each contender is a
FlowVAEModule trained through a real Trainer (the real conf/); a round runs
``--steps`` steps of every contender, in alternating order (interleaved rounds), and
the time per step is taken from a callback between the ``--warmup``-th and the last
step, so torch.compile's first compilation is reported apart from the steady state.

Then one fixed batch with fixed noise: the negative ELBO under bf16 autocast against
float32 (the flow's log-dets and the log-densities stay float32 in both).

    .venv/bin/python benchmarks/bench_precision.py [--rounds 3] [--steps 60] [--data-dir D]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PLANAR_MNIST_OVERRIDES, compose, pin_threads, run_dirs  # noqa: E402

from nfvae.evaluation import example_elbo  # noqa: E402
from nfvae.training import build_datamodule, build_module, instantiate  # noqa: E402

# The shipped trainer.log_every_n_steps: the logging cost users pay is in each contender.
OVERRIDES = list(PLANAR_MNIST_OVERRIDES)

CONTENDERS = {
    "float32": [],
    "bf16-mixed": ["trainer.precision=bf16-mixed"],
    "compile": ["training.compile=true"],
}


class StepClock(pl.Callback):
    """Seconds per step between the ``warmup``-th and the last step of a fit."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.first, self.steps = warmup, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.first = time.perf_counter()
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps = batch_idx + 1
        self.end = time.perf_counter()

    def per_step(self) -> float:
        return (self.end - self.start) / (self.steps - self.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="training steps per fit")
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the timing")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    pin_threads()
    base = [*run_dirs(args.data_dir, "nfvae-bench-precision-"), *OVERRIDES]
    cfgs = {name: compose([*base, *extra]) for name, extra in CONTENDERS.items()}
    torch.manual_seed(0)
    datamodule = build_datamodule(cfgs["float32"].data)
    modules = {name: build_module(cfg, datamodule.data_shape) for name, cfg in cfgs.items()}
    for module in modules.values():  # the same start for all
        module.model.load_state_dict(modules["float32"].model.state_dict())

    def fit(name: str) -> StepClock:
        clock = StepClock(args.warmup)
        trainer = instantiate(cfgs[name].trainer, logger=False, callbacks=[clock],
                              max_steps=args.steps, max_epochs=-1)
        start = time.perf_counter()
        trainer.fit(modules[name], datamodule=datamodule)
        clock.total = time.perf_counter() - start
        return clock

    print(f"training: {args.steps} steps per fit (timed from step {args.warmup}), "
          f"{args.rounds} interleaved rounds, one thread")
    per_step: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    names = list(CONTENDERS)
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            clock = fit(name)
            per_step[name].append(clock.per_step())
            warm = clock.start - clock.first
            print(f"  round {r + 1}: {name:<11s} {1e3 * clock.per_step():7.2f} ms/step  "
                  f"(first {args.warmup} steps {warm:6.2f} s, fit {clock.total:6.2f} s)",
                  flush=True)
    reference = statistics.median(per_step["float32"])
    for name, times in per_step.items():
        ratios = [f / t for f, t in zip(per_step["float32"], times, strict=True)]
        print(f"{name:<11s} median {1e3 * statistics.median(times):7.2f} ms/step   speed vs "
              f"float32 {reference / statistics.median(times):5.2f}x (per round: "
              f"{', '.join(f'{q:.2f}' for q in ratios)})")

    # What bf16 autocast does to the objective, on one batch with fixed noise.
    model = modules["float32"].model.eval()
    x = torch.bernoulli(datamodule.split("test")[0][:500],
                        generator=torch.Generator().manual_seed(0))
    index = torch.arange(len(x))
    full = example_elbo(model, x, index)["neg_elbo"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = example_elbo(model, x, index)["neg_elbo"]
    gap = (half - full).abs()
    print(f"negative ELBO, 500 test images, fixed noise: float32 {float(full.mean()):.4f}, "
          f"bf16 autocast {float(half.mean()):.4f}; per-example |difference| median "
          f"{float(gap.median()):.4f}, max {float(gap.max()):.4f} nats")


if __name__ == "__main__":
    main()
