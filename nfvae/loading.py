"""``load_module(path)``: any nfvae checkpoint back as the LightningModule that wrote it.

Every LightningModule records the import path of its class in its checkpoints
(``checkpoint[MODULE_KEY] = class_path(self)`` in ``on_save_checkpoint``). The loader
imports that class and rebuilds the module from the checkpoint's hyper-parameters, so
a new kind of model loads without an edit here.

Checkpoints written before the key existed are recognised by what they hold: the 2-D
density modules' ``nfvae_module_class`` entry, or a flow-VAE's hyper-parameters
(``model``, ``flow``, ``optimizer``). Anything else is refused with the one-line fix
that adds the key.
"""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
from hydra.utils import get_class

from nfvae.checkpoints import CheckpointError, check_compatible, read_checkpoint

#: Checkpoint entry naming the LightningModule class that wrote it.
MODULE_KEY = "nfvae_module"
#: Where 2-D density checkpoints named their class before ``MODULE_KEY``.
LEGACY_CLASS_KEY = "nfvae_module_class"
#: The class of checkpoints that name none and hold a flow-VAE's hyper-parameters.
LEGACY_VAE_CLASS = "nfvae.module.FlowVAEModule"
_VAE_HPARAMS = {"model", "flow", "optimizer"}


def class_path(module: Any) -> str:
    """``package.module.Class`` of ``module``'s type: what ``MODULE_KEY`` records."""
    return f"{type(module).__module__}.{type(module).__qualname__}"


def module_class_path(checkpoint: dict[str, Any], path: str | os.PathLike = "") -> str:
    """The import path of the class that wrote ``checkpoint`` (see the module docstring)."""
    for key in (MODULE_KEY, LEGACY_CLASS_KEY):
        if isinstance(checkpoint.get(key), str):
            return checkpoint[key]
    hparams = checkpoint.get("hyper_parameters") or {}
    if _VAE_HPARAMS <= set(hparams) and "target" not in hparams:
        return LEGACY_VAE_CLASS
    raise CheckpointError(
        f"could not load checkpoint {path}: it does not say which module wrote it (no "
        f"'{MODULE_KEY}' entry) and its hyper_parameters ({', '.join(sorted(hparams)) or 'none'}) "
        "are not a flow-VAE's. If you know its class, record it once: python -c \"import torch; "
        f"p = '{path}'; c = torch.load(p, weights_only=True); c['{MODULE_KEY}'] = "
        "'nfvae.toy.module.ReverseKLModule'; torch.save(c, p)\" (with the right class)")


def load_module(path: str | os.PathLike, map_location: str = "cpu") -> pl.LightningModule:
    """The module saved in checkpoint ``path``, weights-only, in eval mode.

    Raises ``FileNotFoundError`` for a missing file and ``CheckpointError`` for a
    truncated, foreign or unloadable one, each naming the file.
    """
    checkpoint = read_checkpoint(path)
    target = module_class_path(checkpoint, path)
    try:
        module_class = get_class(target)
    except Exception as error:  # noqa: BLE001 - re-raised with the file named
        raise CheckpointError(
            f"could not load checkpoint {path}: the module class it records, {target}, cannot "
            f"be imported ({type(error).__name__}: {error})") from error
    if not (isinstance(module_class, type) and issubclass(module_class, pl.LightningModule)):
        raise CheckpointError(f"could not load checkpoint {path}: {target} is not a "
                              "LightningModule")
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    try:
        module = module_class(**hparams)
    except (TypeError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"could not load checkpoint {path}: its hyper_parameters do not describe a "
            f"{module_class.__name__} ({type(error).__name__}: {error})") from error
    # Names every mismatched parameter shape before load_state_dict's bare error.
    check_compatible(checkpoint, module, path)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    return module.to(map_location).eval()
