"""What training-curve logging costs per step, on the shipped defaults.

The digits default (conf/train.yaml as shipped: MLP, planar K=4, batch 64, the shipped
``trainer.log_every_n_steps`` and TensorBoard logger), trained through a real Trainer
with validation, checkpoints and figures off, so the step is as small as it gets and
logging weighs the most. Contenders, interleaved per round:

* shipped: ``FlowVAEModule`` as is: the six train/* values logged only on the steps
  Lightning writes (``nfvae.module.logger_writes_this_step``);
* every_step: the six logged every step, Lightning writing every ``log_every_n_steps``
  (what a module gets by always calling ``self.log`` and letting Lightning decide);
* silent: no ``self.log`` at all (the floor).

On a shared machine a whole step's time varies by more than the logging costs, so
besides the step's CPU time this reports the CPU time spent inside the logging path
itself: ``self.log``/``self.log_dict`` and Lightning's per-step metric collection
(``_LoggerConnector.on_batch_end``) and writing (``update_train_step_metrics``).

    .venv/bin/python benchmarks/bench_logging.py [--rounds 5] [--epochs 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from unittest import mock
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import compose, interleaved, pin_threads  # noqa: E402

from pytorch_lightning.trainer.connectors.logger_connector.logger_connector import (  # noqa: E402
    _LoggerConnector,
)

import nfvae.module  # noqa: E402
from nfvae.module import FlowVAEModule  # noqa: E402
from nfvae.training import build_datamodule, instantiate  # noqa: E402

OVERRIDES = ["trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
             "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
             "trainer.enable_checkpointing=false", "callbacks=none"]


class Silent(FlowVAEModule):
    def log(self, *args, **kwargs):
        pass

    def log_dict(self, *args, **kwargs):
        pass


class EveryStep(FlowVAEModule):
    def training_step(self, batch, batch_idx):
        with mock.patch.object(nfvae.module, "logger_writes_this_step", lambda trainer: True):
            return super().training_step(batch, batch_idx)


class LoggingClock:
    """CPU seconds spent in the logging path (see the module docstring), while on."""

    def __init__(self):
        self.seconds, self.on, self.depth = 0.0, False, 0

    def wrap(self, owner, name: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            if not self.on or self.depth:  # log_dict calls log: count the outer call only
                return original(*args, **kwargs)
            start = time.thread_time()
            self.depth += 1
            try:
                return original(*args, **kwargs)
            finally:
                self.depth -= 1
                self.seconds += time.thread_time() - start

        setattr(owner, name, timed)


LOGGING = LoggingClock()
for _owner, _name in ((pl.LightningModule, "log"), (pl.LightningModule, "log_dict"),
                      (_LoggerConnector, "on_batch_end"),
                      (_LoggerConnector, "update_train_step_metrics")):
    LOGGING.wrap(_owner, _name)


class StepClock(common.StepClock):
    """Times the steps; Lightning's logging is counted only in timed steps."""

    def measuring(self, on: bool) -> None:
        LOGGING.on = on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    pin_threads()
    out = tempfile.mkdtemp(prefix="nfvae-bench-logging-")
    cfg = compose([f"paths.output_dir={out}", *OVERRIDES,
                   f"trainer.max_epochs={args.epochs}"])
    datamodule = build_datamodule(cfg.data)
    per_step: dict[str, list[float]] = {}
    in_logging: dict[str, list[float]] = {}

    def contender(name: str, cls: type[FlowVAEModule]):
        def run() -> float:
            torch.manual_seed(0)
            module = instantiate(cfg.module, data_shape=list(datamodule.data_shape),
                                 _target_=f"{cls.__module__}.{cls.__qualname__}")
            clock = StepClock()
            LOGGING.seconds = 0.0
            trainer = instantiate(cfg.trainer, logger=instantiate(cfg.logger, version=name),
                                  callbacks=[clock])
            start = time.perf_counter()
            trainer.fit(module, datamodule=datamodule)
            LOGGING.on = False
            per_step.setdefault(name, []).append(clock.seconds / clock.steps)
            in_logging.setdefault(name, []).append(LOGGING.seconds / clock.steps)
            return time.perf_counter() - start
        return run

    print(f"digits default, log_every_n_steps={cfg.trainer.log_every_n_steps}, "
          f"{args.epochs} epochs per fit (the first not timed), {args.rounds} rounds")
    interleaved({"shipped": contender("shipped", FlowVAEModule),
                 "every_step": contender("every_step", EveryStep),
                 "silent": contender("silent", Silent)}, args.rounds, quiet=True)
    floor = statistics.median(per_step["silent"])
    best = min(per_step["silent"])
    for name, values in per_step.items():
        median = statistics.median(values)
        print(f"{name:10s} median {median * 1e3:7.3f} ms CPU/step ({(median - floor) * 1e6:+5.0f} us, "
              f"{100 * (median / floor - 1):+5.1f}% vs silent), min {min(values) * 1e3:7.3f} "
              f"({(min(values) - best) * 1e6:+5.0f} us); rounds: "
              f"{', '.join(f'{v * 1e3:.3f}' for v in values)}")
    for name, values in in_logging.items():
        print(f"{name:10s} in the logging path: median {statistics.median(values) * 1e6:5.0f} us "
              f"CPU/step (rounds: {', '.join(f'{v * 1e6:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
