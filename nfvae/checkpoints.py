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
* ``last``: the newest of ``checkpoints/last.ckpt``, ``checkpoints/on_exception.ckpt``
  (written on SIGTERM or an error) and Lightning's SLURM ``hpc_ckpt_*.ckpt`` in the
  run folder, skipping any with non-finite weights (a diverged run's exception
  checkpoint). The run folder is ``hydra.run.dir``: point it at the old run.
* a path: that checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.environments import SLURMEnvironment

log = logging.getLogger(__name__)

#: Hyperparameters that may change on resume: they steer training, not the shape or
#: meaning of the weights. Everything else must match the checkpoint.
RESUME_SETTINGS = ("optimizer", "objective", "test_num_samples", "data", "skip_nonfinite",
                   "eval_noise_seed", "model.num_samples", "model.compile")


class CheckpointError(RuntimeError):
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


def _is_setting(key: str) -> bool:
    return any(key == s or key.startswith(s + ".") for s in RESUME_SETTINGS)


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
    saved = checkpoint.get("hyper_parameters") or {}
    current = dict(getattr(module, "hparams", {}))
    differences = config_differences(saved, current)
    fatal = [d for d in differences if not _is_setting(d[0])]
    shapes = state_differences(checkpoint["state_dict"], module.state_dict())
    if fatal or shapes:
        phrases = [f"{key} is {a!r} in the checkpoint but {b!r} in the config"
                   for key, a, b in fatal[:8]]
        phrases += shapes[:5] + ([f"... {len(shapes) - 5} more parameters"]
                                 if len(shapes) > 5 else [])
        raise CheckpointError(
            f"checkpoint {path} does not fit the configured model: " + "; ".join(phrases)
            + ". Use the checkpoint's model and flow settings (its .hydra/config.yaml), "
            "or start a new run folder.")
    for key, a, b in differences:
        log.warning("resuming %s with %s changed from %r to %r", path, key, a, b)


def has_finite_weights(checkpoint: dict[str, Any]) -> bool:
    return all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values()
               if torch.is_tensor(v) and v.is_floating_point())


def resumable_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints in a run folder that a run can resume from, newest first."""
    found = [run_dir / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "on_exception.ckpt",
             *run_dir.glob("hpc_ckpt_*.ckpt")]
    return sorted((p for p in found if p.is_file()), key=lambda p: p.stat().st_mtime_ns,
                  reverse=True)


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
    for path in existing:
        if has_finite_weights(read_checkpoint(path)):
            return path
        log.warning("not resuming from %s: its weights are not finite", path)
    raise FileNotFoundError(
        f"ckpt_path=last: no checkpoint to resume in {run_dir} (looked for "
        "checkpoints/last.ckpt, checkpoints/on_exception.ckpt and hpc_ckpt_*.ckpt with "
        "finite weights). Point hydra.run.dir at the old run folder, e.g. "
        "python train.py hydra.run.dir=outputs/2024-05-01/12-00-00 ckpt_path=last")


def checkpoint_step(checkpoint: dict[str, Any]) -> int:
    step = checkpoint.get("global_step", 0)
    return int(step) if isinstance(step, (int, float)) and math.isfinite(step) else 0
