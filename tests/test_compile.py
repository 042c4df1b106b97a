"""training.compile: the auto decision, explicit values, no recompiles across training,
validation and test, and training on eager when compilation is impossible."""

from __future__ import annotations

import logging
import math
import os

import pytest
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException

from nfvae.compiling import (
    COLD_COMPILE_S,
    SAVING,
    TIMED_STEPS,
    WARM_COMPILE_S,
    WARMUP_STEPS,
    CompileSettings,
    cache_dir,
    decide,
    read_measurement,
    remaining_training_steps,
    write_measurement,
)
from nfvae.training import build_module, train

QUICK = ["trainer.enable_progress_bar=false", "~callbacks.progress_bar", "~callbacks.images",
         "trainer.enable_model_summary=false"]


class StopAfterDecision(pl.Callback):
    """Stops the fit once auto has decided; keeps the decision and the step."""

    seen: dict = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        forward = pl_module.training_forward
        if forward.stamps is None and not StopAfterDecision.seen:
            StopAfterDecision.seen.update(compiled=forward.is_compiled, step=trainer.global_step)
            trainer.should_stop = True


class CountGraphs(pl.Callback):
    """Graphs dynamo compiled, as (stage, batch size, graphs), in ``compiles``."""

    compiles: list[tuple[str, int, int]] = []

    @staticmethod
    def graphs() -> int:
        return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])

    def _start(self, batch):
        self.before = self.graphs()

    def _end(self, stage, batch):
        new = self.graphs() - self.before
        if new:
            CountGraphs.compiles.append((stage, len(batch[0]), new))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start(batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._end("train", batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._start(batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0):
        self._end("val", batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._start(batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._end("test", batch)


COUNT = "+callbacks.count_graphs._target_=test_compile.CountGraphs"
STOP = "+callbacks.stop._target_=test_compile.StopAfterDecision"


@pytest.fixture(autouse=True)
def _fresh_records(monkeypatch, tmp_path):
    # Each test its own compile cache: a step-time measurement one run keeps there
    # (auto's check) must not steer another test's decision.
    monkeypatch.setenv("NFVAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache" / "torchinductor"))
    CountGraphs.compiles.clear()
    StopAfterDecision.seen.clear()
    # Dynamo keeps compiled code per code object across module instances: each test
    # starts with none, so that what it counts is its own.
    torch._dynamo.reset()


# ------------------------------------------------------------------ the decision
def test_remaining_steps_take_the_sooner_limit_and_count_what_is_done():
    assert remaining_training_steps(60, -1, 23) == 60 * 23
    assert remaining_training_steps(60, 100, 23) == 100
    assert remaining_training_steps(-1, 100, 23, global_step=30) == 70
    assert remaining_training_steps(10, -1, 23, current_epoch=4) == 6 * 23
    assert remaining_training_steps(-1, -1, 23) == math.inf
    assert remaining_training_steps(None, 50, 23, accumulate=4) == 200
    assert remaining_training_steps(-1, -1, math.inf) == math.inf


def test_auto_keeps_a_short_run_eager_and_compiles_a_long_one():
    # The shipped digits run (60 epochs x 23 batches) at a few ms a step: eager.
    assert decide(60 * 23, 0.004, cached=False)[0] is False
    assert decide(60 * 23, 0.004, cached=True)[0] is False
    # MNIST for 500 epochs of 550 batches at ~25 ms a step: compile, even with a cold cache.
    compile_now, why = decide(500 * 550, 0.025, cached=False)
    assert compile_now and "275000 planned steps" in why and "empty cache" in why
    assert decide(math.inf, 0.001, cached=False)[0] is True
    # Between the two costs, the cache decides.
    steps = (COLD_COMPILE_S + WARM_COMPILE_S) / 2 / (0.01 * SAVING)
    assert decide(steps, 0.01, cached=True)[0] is True
    assert decide(steps, 0.01, cached=False)[0] is False


@pytest.mark.parametrize(("value", "when", "options"), [
    ("auto", "auto", {}), ("AUTO", "auto", {}), (True, "always", {}), (False, "never", {}),
    (None, "never", {}), ({"mode": "max-autotune"}, "always", {"mode": "max-autotune"}),
])
def test_compile_values_parse(value, when, options):
    settings = CompileSettings.parse(value)
    assert (settings.when, settings.options) == (when, options)


@pytest.mark.parametrize(("override", "message"), [
    ("training.compile=yes", "training.compile must be auto, true, false or a dict of "
                             "torch.compile options .* got 'yes'"),
    ("training.compile=3", "training.compile must be auto, true, false .* got 3"),
    ("training.compile={mod:max-autotune}", "unknown torch.compile option.* mod; it takes"),
])
def test_bad_compile_values_fail_before_training(override, message, compose_cfg, tmp_path):
    with pytest.raises((ValueError, InstantiationException), match=message):
        train(compose_cfg([override, *QUICK]))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_shipped_default_is_auto_and_explicit_values_are_kept(compose_cfg):
    shipped = build_module(compose_cfg([]), (1, 8, 8))
    assert shipped.hparams.compile == "auto"
    assert shipped.training_forward.settings.when == "auto"
    assert build_module(compose_cfg(["training.compile=true"]), (1, 8, 8)
                        ).training_forward.settings.when == "always"
    assert build_module(compose_cfg(["training.compile=false"]), (1, 8, 8)
                        ).training_forward.settings.when == "never"
    # Nothing is compiled at build time, and the model keeps its own (eager) call and
    # parameter names, so checkpoints of compiled and eager runs are interchangeable.
    compiled = build_module(compose_cfg(["training.compile=true"]), (1, 8, 8))
    assert compiled.model._compiled_call_impl is None
    assert compiled.state_dict().keys() == shipped.state_dict().keys()


@pytest.mark.parametrize("inductor_dir", [None, "torch default", "chosen"])
def test_the_compile_cache_outlives_tmp_unless_the_user_chose_a_folder(
        inductor_dir, monkeypatch, tmp_path):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    # Importing torch._dynamo sets TORCHINDUCTOR_CACHE_DIR to torch's default in /tmp.
    values = {None: None, "torch default": default_cache_dir(),
              "chosen": str(tmp_path / "mine")}
    monkeypatch.setenv("NFVAE_CACHE_DIR", str(tmp_path / "nfvae"))
    if values[inductor_dir] is None:
        monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    else:
        monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", values[inductor_dir])
    expected = tmp_path / ("mine" if inductor_dir == "chosen" else "nfvae/torchinductor")
    assert cache_dir() == expected
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(expected)


# ------------------------------------------------------------------ real runs
def test_the_shipped_digits_run_stays_eager(compose_cfg, caplog):
    """The shipped config, as `python train.py` runs it: auto times the first steps of the
    planned 60 epochs and stays eager (stopped once it has decided)."""
    with caplog.at_level(logging.INFO, logger="nfvae.compiling"):
        train(compose_cfg([*QUICK, STOP, "test.enabled=false"]))
    assert StopAfterDecision.seen == {"compiled": False, "step": WARMUP_STEPS + TIMED_STEPS + 1}
    lines = [r.getMessage() for r in caplog.records if r.name == "nfvae.compiling"]
    # 60 epochs x 23 batches, less the 13 steps it timed
    assert len(lines) == 1 and lines[0].startswith(
        "training.compile=auto: training eager (1367 planned steps"), lines


def test_auto_compiles_once_it_has_decided_to(compose_cfg, caplog, monkeypatch):
    """A run that repays compilation (the decision forced here, and aot_eager instead of
    inductor to keep it quick): eager for the timed steps, compiled from the next."""
    import functools

    import nfvae.compiling

    monkeypatch.setattr(nfvae.compiling, "decide", lambda *args, **kwargs: (True, "forced"))
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    with caplog.at_level(logging.INFO, logger="nfvae.compiling"):
        train(compose_cfg([*QUICK, COUNT, STOP, "test.enabled=false"]))
    assert StopAfterDecision.seen["compiled"] is True
    assert CountGraphs.compiles == [("train", 64, 1)]  # at the step after the timed ones
    lines = [r.getMessage() for r in caplog.records if r.name == "nfvae.compiling"]
    assert len(lines) == 1 and "compiling the training step (training.compile=auto: " \
        "forced" in lines[0], lines


def test_false_never_compiles(compose_cfg):
    train(compose_cfg([*QUICK, COUNT, "training.compile=false", "trainer.max_epochs=1",
                       "trainer.limit_train_batches=3", "test.enabled=false"]))
    assert CountGraphs.compiles == []


def test_compiled_training_compiles_once_through_partial_batches_val_and_test(
        compose_cfg, monkeypatch, tmp_path):
    """One graph for the training step; a partial last batch (1437 = 22 x 64 + 29),
    validation (180 images) and test (importance sampling) compile nothing more. The
    aot_eager backend keeps it quick: recompiles are dynamo's guards, whatever the
    backend. The compiled graph is recorded in nfvae's cache, which inductor uses."""
    monkeypatch.setenv("NFVAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    metrics = train(compose_cfg([*QUICK, COUNT, "training.compile={backend:aot_eager}",
                                 "trainer.max_epochs=2", "test.num_samples=10"]))
    assert math.isfinite(metrics["test/nll"])
    assert [(stage, size) for stage, size, _ in CountGraphs.compiles] == [("train", 64)]
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "torchinductor")
    assert len(list((tmp_path / "cache" / "torchinductor" / "nfvae-compiled").iterdir())) == 1


def test_no_compiler_trains_eager_with_one_warning(compose_cfg, caplog, monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/g++",))
    with caplog.at_level(logging.INFO, logger="nfvae.compiling"):
        metrics = train(compose_cfg([*QUICK, COUNT, "training.compile=true",
                                     "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                                     "test.enabled=false"]))
    assert math.isfinite(metrics["val/neg_elbo"]) and CountGraphs.compiles == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
                and r.name == "nfvae.compiling"]
    assert len(warnings) == 1 and "no working C++ compiler" in warnings[0], warnings
    assert warnings[0].endswith("training eager")


def test_a_failing_compilation_falls_back_to_eager(compose_cfg, caplog):
    def failing_backend(gm, example_inputs):
        raise RuntimeError("this backend cannot compile")

    torch._dynamo.register_backend(failing_backend, name="nfvae_test_failing")
    with caplog.at_level(logging.INFO, logger="nfvae.compiling"):
        metrics = train(compose_cfg([*QUICK, "training.compile={backend:nfvae_test_failing}",
                                     "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                                     "test.enabled=false"]))
    assert math.isfinite(metrics["val/neg_elbo"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
                and r.name == "nfvae.compiling"]
    assert len(warnings) == 1 and "compilation failed" in warnings[0], warnings


@pytest.mark.slow
def test_inductor_compiles_the_training_step_once(compose_cfg):
    """training.compile=true with the real backend (inductor; minutes with a cold cache
    on two cores): one graph through partial batches, validation and test."""
    metrics = train(compose_cfg([*QUICK, COUNT, "training.compile=true", "trainer.max_epochs=2",
                                 "test.num_samples=10"]))
    assert math.isfinite(metrics["test/nll"])
    assert [(stage, size) for stage, size, _ in CountGraphs.compiles] == [("train", 64)]


def test_a_run_resumed_from_a_compiled_checkpoint_compiles_at_once(compose_cfg, monkeypatch,
                                                                   tmp_path):
    """The checkpoint records that training was compiled; the resumed run compiles at its
    first step, even where auto would now decide otherwise, so that it trains as the
    uninterrupted run did (no eager steps after the resume)."""
    import functools

    import nfvae.compiling
    from nfvae.module import COMPILED_KEY

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    # aot_eager needs no C++ compiler (the no-compiler test leaves torch's lookup cached)
    monkeypatch.setattr(nfvae.compiling, "compiler_missing", lambda *args: None)
    monkeypatch.setattr(nfvae.compiling, "decide", lambda *args, **kwargs: (True, "forced"))
    run = tmp_path / "run"
    base = [*QUICK, COUNT, "test.enabled=false", "trainer.limit_train_batches=20"]
    train(compose_cfg([*base, "trainer.max_epochs=1"], output_dir=run))
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint[COMPILED_KEY] is True
    steps = checkpoint["global_step"]

    CountGraphs.compiles.clear()
    torch._dynamo.reset()
    monkeypatch.setattr(nfvae.compiling, "decide", lambda *args, **kwargs: (False, "forced eager"))
    train(compose_cfg([*base, "trainer.max_epochs=2", "ckpt_path=last"], output_dir=run))
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 2 * steps and resumed[COMPILED_KEY] is True
    # the first training batch after the resume compiled the graph
    assert CountGraphs.compiles[0][0] == "train"


class CompiledAtEnd(pl.Callback):
    """Whether the training step was compiled when training ended."""

    seen: list[bool] = []

    def on_train_end(self, trainer, pl_module):
        CompiledAtEnd.seen.append(pl_module.training_forward.is_compiled)


def test_auto_goes_back_to_eager_when_compiling_did_not_pay_and_remembers(
        compose_cfg, caplog, monkeypatch, tmp_path):
    """auto compiles (the decision forced), times the compiled steps as it timed the eager
    ones, finds them slower (a stand-in compiler that adds 30 ms a step) and trains eager
    from there; the next run of the same model reads that and stays eager without
    compiling at all."""
    import time

    import nfvae.compiling

    compiled = []

    def slow_compile(fn, **options):
        compiled.append(fn)

        def run(*args, **kwargs):
            time.sleep(0.03)
            return fn(*args, **kwargs)
        return run

    # Its own cache: the measurement it writes must not reach other tests' runs.
    monkeypatch.setenv("NFVAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache" / "torchinductor"))
    monkeypatch.setattr(torch, "compile", slow_compile)
    monkeypatch.setattr(nfvae.compiling, "compiler_missing", lambda *args: None)
    monkeypatch.setattr(nfvae.compiling, "decide", lambda *args, **kwargs: (True, "forced"))
    steps = 2 * (WARMUP_STEPS + TIMED_STEPS + 1) + 2
    cfg = [*QUICK, "+callbacks.end._target_=test_compile.CompiledAtEnd", "test.enabled=false",
           f"trainer.max_steps={steps}", "trainer.limit_val_batches=0"]
    CompiledAtEnd.seen.clear()
    with caplog.at_level(logging.INFO, logger="nfvae.compiling"):
        train(compose_cfg(cfg, output_dir=tmp_path / "first"))
    lines = [r.getMessage() for r in caplog.records if r.name == "nfvae.compiling"]
    assert len(compiled) == 1 and CompiledAtEnd.seen == [False], lines
    assert "the compiled step took" in lines[-1] and "training eager from here" in lines[-1]
    markers = list((tmp_path / "cache" / "torchinductor" / "nfvae-compiled").iterdir())
    measured = read_measurement(markers[0])
    assert len(markers) == 1 and measured["compiled_s"] > measured["eager_s"] + 0.02

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="nfvae.compiling"):
        train(compose_cfg(cfg, output_dir=tmp_path / "second"))
    lines = [r.getMessage() for r in caplog.records if r.name == "nfvae.compiling"]
    assert len(compiled) == 1 and CompiledAtEnd.seen == [False, False]
    assert len(lines) == 1 and "measured" in lines[0] and "in an earlier run" in lines[0], lines

    # A measurement that says compiling halves the step: auto weighs that saving.
    write_measurement(markers[0], eager_s=0.010, compiled_s=0.005)
    savings = []
    monkeypatch.setattr(nfvae.compiling, "decide", lambda *args, **kwargs: (
        savings.append(kwargs.get("saving")), (False, "spied"))[1])
    train(compose_cfg(cfg, output_dir=tmp_path / "third"))
    assert savings == [pytest.approx(0.5)] and len(compiled) == 1


def test_a_measured_saving_replaces_the_assumed_one(tmp_path):
    """decide() weighs an earlier run's measured saving, not the assumed SAVING."""
    marker = tmp_path / "marker"
    assert read_measurement(marker) is None
    marker.touch()  # compiled, not yet measured
    assert read_measurement(marker) is None
    write_measurement(marker, eager_s=0.010, compiled_s=0.005)
    assert read_measurement(marker) == {"eager_s": 0.010, "compiled_s": 0.005}
    steps = WARM_COMPILE_S / (0.01 * 0.5) * 1.1  # repays at a 50% saving, not at 15%
    assert decide(steps, 0.01, cached=True, saving=0.5)[0]
    assert not decide(steps, 0.01, cached=True)[0]

