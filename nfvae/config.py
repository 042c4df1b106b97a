"""Where the configs are, and small helpers for configs that travel into checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

#: The Hydra configs, shipped inside the package: in a source checkout nfvae/conf links
#: to the repository's top-level conf/, and a built wheel holds a copy (pyproject's
#: package data), so the commands find them from any folder once nfvae is installed.
CONF_DIR = Path(__file__).resolve().parent / "conf"


def to_plain(node: Any) -> Any:
    """A resolved OmegaConf node as plain dicts and lists (anything else unchanged), so
    that hyper-parameters saved in a checkpoint load with ``torch.load(weights_only=True)``."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def slurm_gpus_per_node(accelerator: Any, devices: Any) -> int | None:
    """``hydra.launcher.gpus_per_node`` from the trainer: one GPU per task on GPU
    trainers, none on CPU trainers (SLURM rejects a GPU request on a node without
    GPUs, so a CPU job must not ask for any)."""
    if str(accelerator) in ("gpu", "cuda"):
        return devices
    if str(accelerator) == "cpu":
        return None
    raise ValueError(f"hydra/launcher=slurm needs trainer.accelerator=gpu or cpu, not "
                     f"{accelerator!r}: the job's GPU request follows it")


OmegaConf.register_new_resolver("nfvae.slurm_gpus_per_node", slurm_gpus_per_node, replace=True)
