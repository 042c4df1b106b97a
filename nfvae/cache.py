"""nfvae's cache folder, for what is expensive to make and safe to keep between runs
(the diagnosis's sample classifier, compiled kernels): ``NFVAE_CACHE_DIR``, else
``$XDG_CACHE_HOME/nfvae``, else ``~/.cache/nfvae``."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    if os.environ.get("NFVAE_CACHE_DIR"):
        return Path(os.environ["NFVAE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nfvae"
