"""What ``training.compile`` costs at start-up and what it gains per step.

Each run is ``nfvae.training.train(cfg)`` on the real conf/ in its own process, one
thread. Per configuration, three contenders, interleaved over rounds:

* ``eager``: ``training.compile=false``;
* ``cold``: ``training.compile=true`` with an empty compile cache
  (``TORCHINDUCTOR_CACHE_DIR`` a fresh folder);
* ``warm``: ``training.compile=true`` again on the cache the round's cold run filled.

Per run: start-up (process start to the first step), the first step's wall seconds (the
compilation, for a compiled run), the median CPU seconds of a training step that
compiled nothing (steps/s), the whole ``train(cfg)`` (fit, validation, test), and the
graphs compiled in each stage: training, validation (with the sanity check) and test,
with the batch sizes that compiled, so a recompile for a partial last batch or for an
evaluation batch size shows. From these, the break-even: the training steps after which
the compiled run has caught up with eager, cold and warm.

Configurations: ``digits`` is ``python train.py`` as shipped (``trainer.max_steps``
shortened; callbacks, validation and test as shipped, so their compiles count);
``mnist`` is the model of bench_peers.py (MNIST MLP 784-300-300, latent 64, amortized
planar K = 10, batch 100), training only.

    NFVAE_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_compile.py \
        [--configs digits mnist] [--rounds 2] [--steps 150] [--compile true]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = time.perf_counter()
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CONFIGS = {
    "digits": [],
    "mnist": "PLANAR_MNIST",  # common.PLANAR_MNIST_OVERRIDES (imported in the worker)
}


# -------------------------------------------------------------------------- worker
def worker(config: str, steps: int, compile_value: str) -> dict:
    import pytorch_lightning as pl
    import torch

    sys.path.insert(0, str(HERE))
    from common import PLANAR_MNIST_OVERRIDES, compose, pin_threads, run_dirs

    from nfvae.training import train

    pin_threads()
    counters = torch._dynamo.utils.counters

    def graphs() -> int:
        return int(counters["stats"]["unique_graphs"])

    class CompileClock(pl.Callback):
        """Per batch: wall and CPU seconds, and the graphs compiled in it, by stage."""

        first_step_start: float | None = None
        records: list[dict] = []

        def _start(self, stage, batch):
            self.t = (time.perf_counter(), time.thread_time(), graphs())
            if stage == "train" and CompileClock.first_step_start is None:
                CompileClock.first_step_start = self.t[0]

        def _end(self, stage, batch):
            wall, cpu, g = self.t
            CompileClock.records.append({
                "stage": stage, "batch_size": len(batch[0]),
                "wall": time.perf_counter() - wall, "cpu": time.thread_time() - cpu,
                "new_graphs": graphs() - g})

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._start("train", batch)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self._end("train", batch)

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx,
                                      dataloader_idx=0):
            self._start("val", batch)

        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                    dataloader_idx=0):
            self._end("val", batch)

        def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            self._start("test", batch)

        def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                              dataloader_idx=0):
            self._end("test", batch)

    sys.modules["bench_compile"] = sys.modules[__name__]
    globals()["CompileClock"] = CompileClock
    overrides = PLANAR_MNIST_OVERRIDES + ["test.enabled=false", "trainer.max_epochs=1"] \
        if config == "mnist" else list(CONFIGS[config])
    data = run_dirs(None, f"nfvae-bench-compile-{config}-") if config == "mnist" else [
        f"paths.output_dir={tempfile.mkdtemp(prefix='nfvae-bench-compile-')}"]
    cfg = compose([*data, *overrides, f"trainer.max_steps={steps}",
                   f"training.compile={compile_value}",
                   "+callbacks.compile_clock._target_=bench_compile.CompileClock"])
    start = time.perf_counter()
    train(cfg)
    total = time.perf_counter() - start
    records = CompileClock.records
    train_steps = [r for r in records if r["stage"] == "train"]
    steady = [r["cpu"] for r in train_steps[1:] if not r["new_graphs"]]
    compiles = [{k: r[k] for k in ("stage", "batch_size", "new_graphs")}
                for r in records if r["new_graphs"]]
    return {
        "config": config, "compile": compile_value,
        "startup_s": CompileClock.first_step_start - START,
        "first_step_s": train_steps[0]["wall"],
        "step_ms": 1e3 * statistics.median(steady),
        "steps": len(train_steps),
        "train_s": total,
        "graphs": {s: sum(r["new_graphs"] for r in records if r["stage"] == s)
                   for s in ("train", "val", "test")},
        "compiles": compiles,
        "cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR", ""),
    }


# -------------------------------------------------------------------------- driver
def run_worker(config: str, name: str, args, cache_dir: str) -> dict:
    compile_value = "false" if name == "eager" else args.compile
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", config,
           "--steps", str(args.steps), "--compile", compile_value]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "TORCHINDUCTOR_CACHE_DIR": cache_dir}
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{config} {name} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "name": name}


def break_even(eager: dict, compiled: dict) -> str:
    """Training steps after which the compiled run has repaid its longer start-up and
    first step."""
    saved = eager["step_ms"] - compiled["step_ms"]
    extra = 1e3 * (compiled["startup_s"] + compiled["first_step_s"]
                   - eager["startup_s"] - eager["first_step_s"])
    if saved <= 0:
        return "never"
    return f"{max(0.0, extra) / saved:.0f}"


def report(config: str, results: list[dict]) -> str:
    by = {name: [r for r in results if r["name"] == name] for name in ("eager", "cold", "warm")}
    lines = [f"\n{config}: medians over {len(by['eager'])} round(s)",
             "| | start-up, s | first step, s | ms/step (CPU) | steps/s | vs eager | "
             "train(cfg), s | graphs train/val/test | break-even, steps |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    eager_ms = [r["step_ms"] for r in by["eager"]]
    for name, runs in by.items():
        if not runs:
            continue
        med = {k: statistics.median(r[k] for r in runs)
               for k in ("startup_s", "first_step_s", "step_ms", "train_s")}
        ratios = [e / r["step_ms"] for e, r in zip(eager_ms, runs)] or [math.nan]
        g = runs[-1]["graphs"]
        even = "" if name == "eager" or not eager_ms else break_even(
            {k: statistics.median(r[k] for r in by["eager"])
             for k in ("step_ms", "first_step_s", "startup_s")}, med)
        lines.append(
            f"| {name} | {med['startup_s']:.1f} | {med['first_step_s']:.2f} | "
            f"{med['step_ms']:.2f} | {1e3 / med['step_ms']:.0f} | "
            f"{statistics.median(ratios):.2f} ({', '.join(f'{q:.2f}' for q in ratios)}) | "
            f"{med['train_s']:.1f} | {g['train']}/{g['val']}/{g['test']} | {even} |")
    for name, runs in by.items():  # where the first round's run compiled
        if runs and runs[0]["compiles"]:
            where = ", ".join(f"{c['stage']}@{c['batch_size']}x{c['new_graphs']}"
                              for c in runs[0]["compiles"])
            lines.append(f"  {name} compiled (stage@batch size x graphs): {where}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150, help="training steps per run")
    parser.add_argument("--compile", default="true",
                        help="the training.compile value of the compiled contenders")
    parser.add_argument("--only", nargs="+", default=["eager", "cold", "warm"],
                        choices=["eager", "cold", "warm"])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.compile)))
        return
    names = [n for n in ("eager", "cold", "warm") if n in args.only]
    print(f"{args.steps} training steps per run, {args.rounds} interleaved rounds, one "
          f"thread; compiled: training.compile={args.compile}", flush=True)
    for config in args.configs:
        results = []
        for r in range(args.rounds):
            cache_dir = tempfile.mkdtemp(prefix="nfvae-bench-compile-cache-")
            # cold before warm in every round; eager first or last, alternating
            order = names if r % 2 == 0 else [n for n in names if n != "eager"] + (
                ["eager"] if "eager" in names else [])
            for name in order:
                result = run_worker(config, name, args, cache_dir)
                results.append(result)
                print(f"  {config} round {r + 1} {name:<5s} start-up {result['startup_s']:5.1f} s"
                      f"  first step {result['first_step_s']:6.2f} s  {result['step_ms']:6.2f} "
                      f"ms/step  train(cfg) {result['train_s']:6.1f} s  graphs "
                      f"{result['graphs']}  load {os.getloadavg()[0]:.1f}", flush=True)
        print(report(config, results), flush=True)


if __name__ == "__main__":
    main()
