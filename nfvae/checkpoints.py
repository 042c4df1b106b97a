"""Checkpoints: read them weights-only, check they fit the model, pick the one to resume.

Every file is read with ``torch.load(weights_only=True)``: tensors, numbers,
strings and plain containers only, so a checkpoint cannot run code when loaded
(a full unpickle can; see docs/scaling.md on untrusted checkpoints). A file that
is truncated, not a checkpoint, or made for another model (flow family, latent
size, data shape) fails with a ``CheckpointError`` that names the file and the
mismatch, before Lightning copies any tensor.

Resuming (``ckpt_path`` in conf/train.yaml):

* ``null``: a fresh run. If the run folder already holds checkpoints this is an
  error (two runs would mix in one folder), except in a SLURM job, where it means
  the job was requeued after preemption and resumes from the newest checkpoint.
* ``last``: of the checkpoints in the run folder (``checkpoints/*.ckpt``, with
  ``on_exception.ckpt`` written on SIGTERM or an error, and Lightning's SLURM
  ``hpc_ckpt_*.ckpt``), the one with the highest global step, ``last.ckpt`` first
  among equals. It passes over an exception checkpoint of a run stopped by a
  non-finite loss (its weights are the diverged ones), any with non-finite weights,
  and unreadable files, and says so. The run folder is ``hydra.run.dir``: point it
  at the old run, or at a copy of it.
* a path: that checkpoint.

Checkpoints are written into the current run folder whatever the resumed checkpoint
recorded (``RunFolderCheckpoint``), and an exception checkpoint is only taken at a
state a run can resume from (``ExceptionCheckpoint``).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from pytorch_lightning.trainer.states import TrainerFn

from nfvae.errors import UserError

log = logging.getLogger(__name__)

#: Checkpoint entry in which ``ExceptionCheckpoint`` records what stopped training.
STOP_KEY = "nfvae_stopped_by"
#: Checkpoint entry with the latest validation figures (``record_validation_metrics``).
VALIDATION_KEY = "nfvae_validation_metrics"


def record_validation_metrics(trainer: pl.Trainer | None, checkpoint: dict[str, Any]) -> None:
    """Keep the latest ``val/*`` figures in the checkpoint: a run resumed after its
    training had ended validates nothing, yet reports them (the HParams metrics)."""
    metrics = trainer.callback_metrics if trainer is not None else {}
    checkpoint[VALIDATION_KEY] = {
        k: float(v) for k, v in metrics.items()
        if k.startswith("val/") and torch.is_tensor(v) and v.numel() == 1}

#: Hyperparameters that may change on resume when a module declares none of its own
#: (``RESUME_SETTINGS`` of the module's class, see ``nfvae.modules.TrainingModule``):
#: they steer training, not the shape or meaning of the weights.
DEFAULT_RESUME_SETTINGS = ("optimizer", "data")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used: unreadable, truncated, or for another model."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's contents, loaded weights-only on the CPU, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch names the refused class only for a well-formed pickle of Python objects;
        # any other refusal ("Unsupported operand") is a file that is no pickle at all.
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        if refused:
            raise CheckpointError(
                f"could not load checkpoint {path}: it holds Python objects ({refused.group(1)}) "
                "other than tensors and plain containers, which weights-only loading refuses "
                "to unpickle (they could run code; see docs/scaling.md)") from error
        raise CheckpointError(_corrupted(path, error)) from error
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as error:
        raise CheckpointError(_corrupted(path, error)) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"could not load checkpoint {path}: not a Lightning checkpoint "
                              "(it has no state_dict)")
    return checkpoint


def _corrupted(path: Path, error: BaseException) -> str:
    if isinstance(error, pickle.UnpicklingError):
        detail = "its bytes are not a pickle torch can read"  # torch's text is advice
    else:
        detail = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        detail = detail.split(". ")[0]  # torch goes on with advice after the first sentence
    return (f"could not load checkpoint {path}: the file is truncated or corrupted "
            f"({path.stat().st_size} bytes; {type(error).__name__}: {detail[:200]})")


def config_differences(saved: Any, current: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, current value) for every leaf that differs."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            out += config_differences(saved.get(key, "<absent>"), current.get(key, "<absent>"),
                                      name)
        return out
    if isinstance(saved, (list, tuple)) and isinstance(current, (list, tuple)):
        saved, current = list(saved), list(current)
    return [] if saved == current else [(prefix, saved, current)]


def _is_setting(key: str, settings: tuple[str, ...]) -> bool:
    if key == "optimizer._target_":  # Adam's saved moments cannot continue as SGD's
        return False
    return any(key == s or key.startswith(s + ".") for s in settings)


def state_differences(saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
                      ) -> list[str]:
    """Missing, unexpected and differently shaped parameters, one phrase each."""
    problems = [f"{k} missing from the checkpoint" for k in expected if k not in saved]
    problems += [f"{k} not in the model" for k in saved if k not in expected]
    problems += [f"{k} has shape {tuple(saved[k].shape)} in the checkpoint, "
                 f"{tuple(expected[k].shape)} in the model"
                 for k in expected if k in saved and saved[k].shape != expected[k].shape]
    return problems


def check_compatible(checkpoint: dict[str, Any], module: torch.nn.Module, path: Any) -> None:
    """Raise ``CheckpointError`` naming every mismatch between the checkpoint and the
    configured module; warn about changed training settings."""
    # A setting newer than the checkpoint: its value then is the one the module implies.
    saved = {**getattr(module, "IMPLIED_HPARAMS", {}),
             **(checkpoint.get("hyper_parameters") or {})}
    current = dict(getattr(module, "hparams", {}))
    differences = config_differences(saved, current)
    settings = tuple(getattr(module, "RESUME_SETTINGS", DEFAULT_RESUME_SETTINGS))
    fatal = [d for d in differences if not _is_setting(d[0], settings)]
    shapes = state_differences(checkpoint["state_dict"], module.state_dict())
    if fatal or shapes:
        phrases = [f"{key} is {a!r} in the checkpoint but {b!r} in the config"
                   for key, a, b in fatal[:8]]
        phrases += shapes[:5] + ([f"... {len(shapes) - 5} more parameters"]
                                 if len(shapes) > 5 else [])
        optimizer = any(key == "optimizer._target_" for key, _, _ in fatal)
        raise CheckpointError(
            f"checkpoint {path} does not fit the configured model: " + "; ".join(phrases)
            + ". Use the checkpoint's " + ("optimizer, model and flow" if optimizer else
                                           "model and flow")
            + " settings (its .hydra/config.yaml), or start a new run folder"
            + (" (an optimizer's saved state cannot continue as another optimizer's)."
               if optimizer else "."))
    for key, a, b in differences:
        log.warning("resuming %s with %s changed from %r to %r: the new value applies from "
                    "here%s", path, key, a, b,
                    " (to the restored optimizer state; its moments are kept)"
                    if key.startswith("optimizer.") else "")


def _optimizer_defaults(config: dict[str, Any]) -> dict[str, Any] | None:
    """The hyperparameters an optimizer config sets (lr, betas, ...), or None if it
    does not build an optimizer alone."""
    from hydra.utils import instantiate

    try:
        built = instantiate(config)
        return dict(built(params=[torch.nn.Parameter(torch.zeros(1))]).defaults)
    except Exception:  # noqa: BLE001 - a config this cannot read is left as restored
        return None


def apply_optimizer_settings(checkpoint: dict[str, Any], configured: dict[str, Any] | None
                             ) -> dict[str, tuple[Any, Any]]:
    """Make a checkpoint's optimizer state carry the configured optimizer settings.

    Lightning restores every param group's hyperparameters (lr, betas, weight decay,
    ...) from the checkpoint, so a resume with ``optimizer.lr=...`` would keep the old
    value while recording the new one. Called on the checkpoint before Lightning loads
    it, this writes each changed setting into the saved param groups, keeping the
    optimizer's moments. A learning rate is scaled (new / old), so a schedule's
    position is kept: the groups' ``lr`` and ``initial_lr`` and the schedulers'
    ``base_lrs`` and ``_last_lr``. Returns {setting: (old, new)}.
    """
    saved = (checkpoint.get("hyper_parameters") or {}).get("optimizer")
    if not saved or not configured or saved == configured:
        return {}
    old, new = _optimizer_defaults(saved), _optimizer_defaults(configured)
    if old is None or new is None:
        log.warning("could not compare the checkpoint's optimizer settings with the "
                    "configured ones; the restored optimizer keeps its own")
        return {}
    changed = {k: (old[k], v) for k, v in new.items() if k in old and old[k] != v}
    lr_factor = None
    if "lr" in changed:
        before, after = changed["lr"]
        lr_factor = after / before if before else None
    for state in checkpoint.get("optimizer_states") or []:
        for group in state.get("param_groups", []):
            for key, (_, value) in changed.items():
                if key == "lr" and lr_factor is not None:
                    group["lr"] = group["lr"] * lr_factor
                    if "initial_lr" in group:
                        group["initial_lr"] = group["initial_lr"] * lr_factor
                elif key in group:
                    group[key] = value
    if lr_factor is not None:
        for scheduler in checkpoint.get("lr_schedulers") or []:
            for key in ("base_lrs", "_last_lr"):
                if isinstance(scheduler.get(key), list):
                    scheduler[key] = [v * lr_factor for v in scheduler[key]]
    return changed


def has_finite_weights(checkpoint: dict[str, Any]) -> bool:
    return all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values()
               if torch.is_tensor(v) and v.is_floating_point())


def resumable_checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint file of a run folder: ``checkpoints/*.ckpt`` (``last.ckpt``,
    the best ``epoch_*.ckpt``, ``on_exception.ckpt``, a ``last-v1.ckpt`` of an older
    version) and Lightning's SLURM ``hpc_ckpt_*.ckpt``."""
    found = [*(run_dir / "checkpoints").glob("*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]
    return sorted(p for p in found if p.is_file())


def _preference(path: Path) -> int:
    """Among checkpoints of one global step: last.ckpt, then SLURM's, then the
    exception checkpoint, then the others (copies of the same state)."""
    name = path.name
    return 3 if name.startswith("last") else 2 if name.startswith("hpc_ckpt_") else (
        1 if name.startswith("on_exception") else 0)


def _why_not_resumable(checkpoint: dict[str, Any]) -> str | None:
    stop = checkpoint.get(STOP_KEY) or {}
    if stop.get("nonfinite"):
        return (f"training stopped there on a non-finite loss or gradient "
                f"({stop.get('error', 'error')}), so its weights are the diverged ones")
    if not has_finite_weights(checkpoint):
        return "its weights are not finite"
    return None


def resolve_resume(ckpt_path: str | os.PathLike | None, run_dir: str | os.PathLike
                   ) -> Path | None:
    """The checkpoint a run resumes from (see the module docstring), or None."""
    run_dir = Path(run_dir)
    existing = resumable_checkpoints(run_dir)
    if ckpt_path in (None, ""):
        if not existing:
            return None
        if not SLURMEnvironment.detect():
            raise FileExistsError(
                f"the run folder {run_dir} already holds checkpoints "
                f"({', '.join(str(p.relative_to(run_dir)) for p in existing)}); pass "
                "ckpt_path=last to resume that run, or set hydra.run.dir to a new folder")
        log.info("SLURM job restarted in %s: resuming from its newest checkpoint", run_dir)
        ckpt_path = "last"
    if str(ckpt_path) != "last":
        path = Path(ckpt_path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path} (ckpt_path)")
        return path
    candidates, passed_over = [], []
    for path in existing:
        try:
            checkpoint = read_checkpoint(path)
        except Exception as error:  # noqa: BLE001 - a damaged file must not block a good one
            passed_over.append(f"{path.relative_to(run_dir)}: {error}")
            log.warning("ckpt_path=last: not resuming from %s: %s", path, error)
            continue
        candidates.append((checkpoint_step(checkpoint), _preference(path),
                           path.stat().st_mtime_ns, path, checkpoint))
    for step, _, _, path, checkpoint in sorted(candidates, key=lambda c: c[:3], reverse=True):
        reason = _why_not_resumable(checkpoint)
        if reason is None:
            if passed_over:
                log.warning("ckpt_path=last: resuming from %s (global step %d), the latest "
                            "checkpoint to resume from", path, step)
            return path
        passed_over.append(f"{path.relative_to(run_dir)} (global step {step}): {reason}")
        log.warning("ckpt_path=last: not resuming from %s (global step %d): %s",
                    path, step, reason)
    if passed_over:
        raise FileNotFoundError(
            f"ckpt_path=last: no checkpoint in {run_dir} to resume from. Passed over: "
            f"{'; '.join(passed_over)}. Start a new run folder (after a non-finite loss: "
            "with a lower optimizer.lr), or pass ckpt_path=<file> to resume one of them "
            "anyway")
    raise FileNotFoundError(
        f"ckpt_path=last: no checkpoint to resume in {run_dir} (looked for "
        "checkpoints/*.ckpt and hpc_ckpt_*.ckpt). Point hydra.run.dir at the old run "
        "folder, e.g. python train.py hydra.run.dir=outputs/2024-05-01/12-00-00 "
        "ckpt_path=last")


def checkpoint_step(checkpoint: dict[str, Any]) -> int:
    step = checkpoint.get("global_step", 0)
    return int(step) if isinstance(step, (int, float)) and math.isfinite(step) else 0


def _moved(path: str, old_dir: str, new_dir: str) -> str:
    if not path:
        return path
    try:
        return str(Path(new_dir) / Path(path).relative_to(old_dir))
    except ValueError:  # not in the old checkpoints folder: leave it
        return path


class RunFolderCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that keeps writing into this run's ``checkpoints/`` after
    resuming a checkpoint whose state names another folder (the run folder was copied
    or moved).

    Lightning restores ``best_model_path`` as recorded (the old folder, so the final
    test would score the old folder's file) and drops ``last_model_path``, so it
    would then write ``last-v1.ckpt`` beside the copied ``last.ckpt``. Here the
    recorded paths are moved into this folder before Lightning restores them.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():
            # A fresh run into a folder with checkpoints is refused (resolve_resume), so
            # a non-empty folder here is a resumed run's own.
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* not empty")
            super().setup(trainer, pl_module, stage)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # Runs from before this class replaced Lightning's ModelCheckpoint keep its state
        # under ModelCheckpoint's key; without it the resumed run would start a fresh
        # history (last-v1.ckpt beside last.ckpt, the old best never pruned).
        states = checkpoint.get("callbacks") or {}
        legacy = self.state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)
        if self.state_key not in states and legacy in states:
            states[self.state_key] = states[legacy]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old_dir = state_dict.get("dirpath")
        if old_dir and self.dirpath and os.path.realpath(old_dir) != self.dirpath:
            log.info("checkpoints recorded in %s: continuing in %s", old_dir, self.dirpath)
            new_dir = self.dirpath
            state_dict = {**state_dict, "dirpath": new_dir}
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if key in state_dict:
                    state_dict[key] = _moved(state_dict[key], old_dir, new_dir)
            if isinstance(state_dict.get("best_k_models"), dict):
                state_dict["best_k_models"] = {_moved(k, old_dir, new_dir): v
                                               for k, v in state_dict["best_k_models"].items()}
        super().load_state_dict(state_dict)


class ExceptionCheckpoint(OnExceptionCheckpoint):
    """``on_exception.ckpt`` when training stops on an exception (SIGTERM, Ctrl-C, a
    non-finite loss), taken only at a state a run can resume from:

    * while fitting, after at least one step of this run: during ``trainer.test`` the
      module holds the best weights next to the final training state, which no run
      should continue from; before a step, the state is the one the run started from;
    * not inside a validation: Lightning resumes such a state with the rest of that
      validation skipped, so its metrics, figures and checkpoint would be lost. A
      SIGTERM that arrives there is held until the validation has ended (metrics,
      figures and ``last.ckpt`` saved); Lightning then stops before the next step.
      Any other exception there leaves the previous checkpoints to resume from.

    It records what stopped training (``STOP_KEY``), so that ``ckpt_path=last``
    passes over the weights a non-finite loss stopped at.
    """

    def __init__(self, dirpath: str | os.PathLike, filename: str = "on_exception"):
        super().__init__(dirpath, filename)
        self._stopped_by: dict[str, Any] | None = None
        self._held_sigterm = False
        self._started_at: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started_at = trainer.global_step

    def _in_fit_validation(self, trainer: pl.Trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING and (trainer.validating
                                                          or trainer.sanity_checking)

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        # Lightning checks the flag right after this hook (Checkpoint callbacks run last).
        if self._in_fit_validation(trainer) and trainer.received_sigterm:
            trainer._signal_connector.received_sigterm = False
            self._held_sigterm = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._held_sigterm:
            self._held_sigterm = False
            trainer._signal_connector.received_sigterm = True

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if trainer.state.fn != TrainerFn.FITTING or self._in_fit_validation(trainer):
            return
        if self._started_at is None or trainer.global_step == self._started_at:
            return  # nothing trained since the start: the state is the initial or resumed one
        first_line = (str(exception).splitlines() or [""])[0]
        self._stopped_by = {"error": type(exception).__name__, "message": first_line[:500],
                            "nonfinite": isinstance(exception, FloatingPointError),
                            "global_step": int(trainer.global_step)}
        try:
            super().on_exception(trainer, pl_module, exception)
        finally:
            self._stopped_by = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if self._stopped_by is not None:
            checkpoint[STOP_KEY] = dict(self._stopped_by)
