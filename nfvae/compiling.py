"""``training.compile``: whether and how the training step runs under ``torch.compile``.

Values:

* ``auto`` (the default): train eager, time a few steps, then compile only if the
  remaining planned steps repay the compilation (``decide``). Short runs, like the
  shipped digits run, stay eager; long ones compile. Once compiled, it times as many
  compiled steps and goes back to eager if they are slower (by more than 5%):
  inductor's CPU code is slower than eager for some models (bench_flows.py --compile). The
  measurement is kept with the compiled graph's cache entry, so the next run of the
  same model decides from it (eager at once where compiling did not pay).
* ``true``: compile from the first step; ``false``: never.
* a dict of ``torch.compile`` options (``{mode: max-autotune}``): compile with them.

Only the model's training forward is compiled. Validation, test, figures and scoring
call the model itself, eager, so no evaluation batch size, number of importance
samples or no-grad mode ever compiles a graph. The batch dimension is marked dynamic,
so a partial last batch reuses the training graph instead of compiling another.

Compiled artefacts are kept across runs in ``$TORCHINDUCTOR_CACHE_DIR`` when it is set,
else in ``<nfvae cache>/torchinductor`` (``NFVAE_CACHE_DIR``, else
``$XDG_CACHE_HOME/nfvae``, else ``~/.cache/nfvae``): a second run of the same model
finds its kernels there and compiles in seconds, not minutes.

Without a working compiler (no C++ compiler for the CPU, no Triton for a GPU), or if
compilation fails, training goes on eager after one warning line.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nfvae.cache import default_cache_dir

log = logging.getLogger(__name__)

AUTO = "auto"

#: What compilation costs and gains, from benchmarks/bench_compile.py (one thread, a
#: shared 2-core machine, torch 2.14; README, Speed): the extra start-up and first step
#: took 100-200 s with an empty cache and 12-18 s with a warm one, and a compiled step
#: ran 0.97-1.52x an eager one, median 1.3x (Lightning's share included). The costs
#: are the high end and the saving the low end, so auto compiles only runs that surely
#: repay it.
COLD_COMPILE_S = 150.0
WARM_COMPILE_S = 20.0
SAVING = 0.15
#: Eager steps timed before auto decides (after ``WARMUP_STEPS`` untimed ones).
WARMUP_STEPS, TIMED_STEPS = 3, 10


def _compile_keys() -> set[str]:
    return set(inspect.signature(torch.compile).parameters) - {"model"}


@dataclass(frozen=True)
class CompileSettings:
    """``when``: "never", "always" or "auto"; ``options``: keyword arguments of
    ``torch.compile``."""

    when: str = AUTO
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any) -> CompileSettings:
        if value is None or value is False:
            return cls("never")
        if value is True:
            return cls("always")
        if isinstance(value, str) and value.strip().lower() == AUTO:
            return cls(AUTO)
        if isinstance(value, dict):
            unknown = sorted(set(value) - _compile_keys())
            if unknown:
                raise ValueError(f"training.compile: unknown torch.compile option(s) "
                                 f"{', '.join(map(str, unknown))}; it takes "
                                 f"{', '.join(sorted(_compile_keys()))}")
            return cls("always", dict(value))
        raise ValueError(f"training.compile must be auto, true, false or a dict of "
                         f"torch.compile options (e.g. {{mode: max-autotune}}), got {value!r}")


# ------------------------------------------------------------------ the decision
def remaining_training_steps(max_epochs: int | None, max_steps: int | None,
                             batches_per_epoch: float, current_epoch: int = 0,
                             global_step: int = 0, accumulate: int = 1) -> float:
    """Training forward passes still planned: the sooner of the epoch and the step limit
    (-1 or None: no limit; ``math.inf`` when neither limits)."""
    by_epochs = by_steps = math.inf
    if max_epochs is not None and max_epochs >= 0:
        by_epochs = max(0, max_epochs - current_epoch) * batches_per_epoch
    if max_steps is not None and max_steps >= 0:
        by_steps = max(0, max_steps - global_step) * max(1, accumulate)
    return min(by_epochs, by_steps)


def decide(remaining_steps: float, step_s: float, cached: bool,
           cold_s: float = COLD_COMPILE_S, warm_s: float = WARM_COMPILE_S,
           saving: float = SAVING) -> tuple[bool, str]:
    """(compile?, why): compile when the time the remaining steps save exceeds the
    compilation's cost, ``warm_s`` when this model's graph was compiled before into the
    cache (``cached``), else ``cold_s``."""
    cost = warm_s if cached else cold_s
    gain = remaining_steps * step_s * saving
    steps = "unlimited" if math.isinf(remaining_steps) else f"{remaining_steps:.0f}"
    why = (f"{steps} planned steps x {1e3 * step_s:.1f} ms x {saving:.0%} saved = "
           f"{'unlimited' if math.isinf(gain) else f'{gain:.0f} s'} against ~{cost:.0f} s "
           f"to compile ({'cached' if cached else 'empty cache'})")
    return gain > cost, why


# ------------------------------------------------------------------ the compiler
def cache_dir() -> Path:
    """Where inductor keeps compiled artefacts; sets ``TORCHINDUCTOR_CACHE_DIR`` to the
    nfvae cache unless the user chose another folder, so that it outlives /tmp.

    Importing ``torch._dynamo`` (Lightning does) already sets the variable to torch's
    default, /tmp/torchinductor_<user>: that value counts as not chosen. Inductor reads
    the variable at each use, so setting it before the first compilation suffices."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir as torch_default

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not chosen or os.path.abspath(chosen) == os.path.abspath(torch_default()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(default_cache_dir() / "torchinductor")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def compiler_missing(device_type: str, options: dict[str, Any]) -> str | None:
    """Why inductor cannot compile here, or None."""
    if options.get("backend", "inductor") != "inductor":
        return None
    try:
        if device_type == "cuda":
            from torch.utils._triton import has_triton

            return None if has_triton() else "Triton cannot compile for this GPU here"
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as error:  # noqa: BLE001 - any failure means: no compiler
        return f"no working C++ compiler ({error})"
    return None


class TrainingForward:
    """The model's training forward: eager, compiled, or eager until ``auto`` decides.

    ``__call__(x, num_samples)`` is ``model(x, num_samples)``. ``start(...)`` is called
    when training starts; under ``auto`` the steps are timed and the decision is taken
    after ``WARMUP_STEPS + TIMED_STEPS`` of them. ``key`` identifies the compiled graph
    (model config, torch version, ...) so that a warm cache is recognised.
    """

    def __init__(self, model: torch.nn.Module, settings: CompileSettings, key: dict):
        self.model, self.settings, self.key = model, settings, key
        self.compiled: Callable | None = None
        self.remaining, self.device_type = 0.0, "cpu"
        self.stamps: list[float] | None = None  # eager steps, until auto decides
        self.checks: list[float] | None = None  # compiled steps, until auto checks
        self.eager_step_s = math.nan
        self.measured_marker: Path | None = None  # where auto's check is written
        self.broadcast: Callable[[Any], Any] | None = None
        self.marker: Path | None = None

    @property
    def is_compiled(self) -> bool:
        return self.compiled is not None

    def start(self, remaining_steps: float, device_type: str,
              broadcast: Callable[[Any], Any] | None = None, graph: dict | None = None,
              resumed_compiled: bool = False) -> None:
        """At the start of training: compile now (``true``), or begin timing (``auto``).
        ``graph``: what else shapes the compiled graph (precision), for the cache key.
        ``resumed_compiled``: the checkpoint this run resumes was training compiled;
        ``auto`` then compiles at once, so a resumed run trains as the uninterrupted
        one did (no eager steps after the resume where that run was compiled)."""
        self.remaining, self.device_type, self.broadcast = remaining_steps, device_type, broadcast
        if self.settings.when == "never" or self.compiled is not None:
            return
        digest = hashlib.sha1(json.dumps(
            {**self.key, **(graph or {}), "device": device_type,
             "options": self.settings.options, "torch": torch.__version__},
            sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.marker = cache_dir() / "nfvae-compiled" / digest
        if self.settings.when == "always":
            self._compile("training.compile=true")
        elif resumed_compiled and not _slower(read_measurement(self.marker)):
            self._compile("training.compile=auto: the resumed run was compiled")
        else:
            self.stamps = []

    def _compile(self, why: str) -> None:
        missing = compiler_missing(self.device_type, self.settings.options)
        if missing:
            log.warning("training.compile: %s; training eager", missing)
            return
        log.info("training.compile: compiling the training step (%s; cache %s)", why,
                 cache_dir())
        self.compiled = torch.compile(self.model.forward, **self.settings.options)

    def _time_step(self) -> None:
        self.stamps.append(time.perf_counter())
        if len(self.stamps) < WARMUP_STEPS + TIMED_STEPS + 1:
            return
        step_s = _median_step(self.stamps)
        self.stamps, self.eager_step_s = None, step_s
        remaining = self.remaining - WARMUP_STEPS - TIMED_STEPS
        measured = read_measurement(self.marker)
        if _slower(measured):
            compile_now, why = False, (
                f"this model's compiled step measured {_ms(measured['compiled_s'])} against "
                f"{_ms(measured['eager_s'])} eager in an earlier run; {self.marker}")
        else:
            saving = 1 - measured["compiled_s"] / measured["eager_s"] if measured else SAVING
            compile_now, why = decide(remaining, step_s, self.marker.exists(), saving=saving)
        check = not measured
        if self.broadcast is not None:
            # Every rank takes rank 0's decisions (DDP): one rank compiling, or checking,
            # alone would make the others wait for it at every gradient reduction.
            compile_now, check = map(bool, self.broadcast((compile_now, check)))
        if compile_now:
            self._compile(f"training.compile=auto: {why}")
            if self.compiled is not None and check:
                self.checks = []
        else:
            log.info("training.compile=auto: training eager (%s)", why)

    def _check_step(self, marker: Path | None) -> None:
        """Time compiled steps as the eager ones were; back to eager if not faster."""
        self.checks.append(time.perf_counter())
        if len(self.checks) < WARMUP_STEPS + TIMED_STEPS + 1:
            return
        compiled_s, self.checks = _median_step(self.checks), None
        measured = {"eager_s": self.eager_step_s, "compiled_s": compiled_s}
        if self.broadcast is not None:
            measured = self.broadcast(measured)  # rank 0's, on every rank
        slower = _slower(measured)
        if marker is not None and _is_rank_zero():
            write_measurement(marker, measured["eager_s"], measured["compiled_s"])
        compiled_s = measured["compiled_s"]
        if slower:
            self.compiled = None
            log.info("training.compile=auto: the compiled step took %s against %s eager; "
                     "training eager from here (kept in %s for the next run; delete it to "
                     "measure again)", _ms(compiled_s), _ms(measured["eager_s"]), marker)
        else:
            log.info("training.compile=auto: the compiled step takes %s against %s eager",
                     _ms(compiled_s), _ms(measured["eager_s"]))

    # -- the call
    def __call__(self, x: torch.Tensor, num_samples: int):
        if self.stamps is not None:
            self._time_step()
        if self.compiled is None:
            return self.model(x, num_samples)
        # One graph for every batch size: a partial last batch does not recompile.
        torch._dynamo.maybe_mark_dynamic(x, 0)
        try:
            terms = self.compiled(x, num_samples)
        except torch._dynamo.exc.BackendCompilerFailed as error:
            text = str(error).strip()
            log.warning("training.compile: compilation failed (%s); training eager",
                        text.splitlines()[0] if text else type(error).__name__)
            self.compiled, self.checks = None, None
            return self.model(x, num_samples)
        if self.marker is not None:  # compiled once: the cache holds this graph now
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.touch()
            self.measured_marker, self.marker = self.marker, None
        if self.checks is not None:
            self._check_step(self.measured_marker)
        return terms


def _median_step(stamps: list[float]) -> float:
    """The median gap between successive calls after the untimed warm-up ones."""
    steps = stamps[WARMUP_STEPS:]
    return statistics.median(b - a for a, b in zip(steps, steps[1:]))


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f} ms"


#: A compiled step counts as slower only beyond this factor of the eager one: a tie
#: costs nothing once compiled, and one median of 10 steps on a shared machine is noisy.
SLOWER_FACTOR = 1.05


def _slower(measured: dict[str, float] | None) -> bool:
    return bool(measured) and measured["compiled_s"] > SLOWER_FACTOR * measured["eager_s"]


def _is_rank_zero() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def read_measurement(marker: Path | None) -> dict[str, float] | None:
    """The eager and compiled step times an earlier run measured for this graph with as
    many threads as now, if any (a graph compiled but not yet measured has an empty
    marker)."""
    try:
        record = json.loads(marker.read_text()) if marker is not None else None
        if int(record.get("threads", -1)) != torch.get_num_threads():
            return None
        return {k: float(record[k]) for k in ("eager_s", "compiled_s")}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def write_measurement(marker: Path, eager_s: float, compiled_s: float) -> None:
    """Atomically (a reader never sees half a record)."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    partial = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps({"eager_s": eager_s, "compiled_s": compiled_s,
                                   "threads": torch.get_num_threads(),
                                   "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}))
    os.replace(partial, marker)
