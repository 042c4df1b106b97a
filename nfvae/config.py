"""Small helpers for configs that travel into checkpoints."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def to_plain(node: Any) -> Any:
    """A resolved OmegaConf node as plain dicts and lists (anything else unchanged), so
    that hyper-parameters saved in a checkpoint load with ``torch.load(weights_only=True)``."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
