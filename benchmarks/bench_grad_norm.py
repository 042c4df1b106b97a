"""What ``train/grad_norm`` (``nfvae.diagnose.grad_norm.GradNormLogger``) costs per step.

The digits default (conf/train.yaml as shipped: MLP, planar K=4, batch 64, the shipped
``trainer.log_every_n_steps``) through a real Trainer with validation, checkpoints and
the other callbacks off, so the step is as small as it gets and the callback weighs the
most. Contenders, interleaved per round:

* none: no gradient-norm callback;
* shipped: ``GradNormLogger`` as shipped (the norm and ``self.log`` only on the steps
  Lightning writes);
* every_step: the same callback computing and logging on every step (what it would cost
  without the gate).

Reported: CPU time per training step (after a first, untimed epoch), and the CPU time
spent inside the callback's hook itself, per step.

    .venv/bin/python benchmarks/bench_grad_norm.py [--rounds 5] [--epochs 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import StepClock, compose, interleaved, pin_threads  # noqa: E402

import nfvae.diagnose.grad_norm as grad_norm_module  # noqa: E402
from nfvae.diagnose.grad_norm import GradNormLogger  # noqa: E402
from nfvae.training import build_datamodule, instantiate  # noqa: E402

OVERRIDES = ["trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
             "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
             "trainer.enable_checkpointing=false", "callbacks=none"]


class TimedGradNorm(GradNormLogger):
    """The shipped callback, with the CPU time of its hook counted after epoch 0."""

    def __init__(self, every_step: bool = False):
        self.every_step, self.seconds = every_step, 0.0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        start = time.thread_time()
        if self.every_step:
            with mock.patch.object(grad_norm_module, "logger_writes_this_step", lambda t: True):
                super().on_before_optimizer_step(trainer, pl_module, optimizer)
        else:
            super().on_before_optimizer_step(trainer, pl_module, optimizer)
        if trainer.current_epoch > 0:
            self.seconds += time.thread_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    pin_threads()
    out = tempfile.mkdtemp(prefix="nfvae-bench-grad-norm-")
    cfg = compose([f"paths.output_dir={out}", *OVERRIDES, f"trainer.max_epochs={args.epochs}"])
    datamodule = build_datamodule(cfg.data)
    per_step: dict[str, list[float]] = {}
    in_hook: dict[str, list[float]] = {}

    def contender(name: str, callback_factory):
        def run() -> float:
            torch.manual_seed(0)
            module = instantiate(cfg.module, data_shape=list(datamodule.data_shape))
            clock, extra = StepClock(), callback_factory()
            trainer = instantiate(cfg.trainer, logger=instantiate(cfg.logger, version=name),
                                  callbacks=[clock, *([extra] if extra else [])])
            start = time.perf_counter()
            trainer.fit(module, datamodule=datamodule)
            per_step.setdefault(name, []).append(clock.seconds / clock.steps)
            if extra:
                in_hook.setdefault(name, []).append(extra.seconds / clock.steps)
            return time.perf_counter() - start
        return run

    print(f"digits default, log_every_n_steps={cfg.trainer.log_every_n_steps}, "
          f"{args.epochs} epochs per fit (the first not timed), {args.rounds} rounds")
    interleaved({"none": contender("none", lambda: None),
                 "shipped": contender("shipped", TimedGradNorm),
                 "every_step": contender("every_step", lambda: TimedGradNorm(True))},
                args.rounds, quiet=True)
    floor = statistics.median(per_step["none"])
    for name, values in per_step.items():
        median = statistics.median(values)
        print(f"{name:10s} median {median * 1e3:7.3f} ms CPU/step "
              f"({(median - floor) * 1e6:+5.0f} us vs none); rounds: "
              f"{', '.join(f'{v * 1e3:.3f}' for v in values)}")
    for name, values in in_hook.items():
        print(f"{name:10s} in the callback: median {statistics.median(values) * 1e6:6.1f} us "
              f"CPU/step (rounds: {', '.join(f'{v * 1e6:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
