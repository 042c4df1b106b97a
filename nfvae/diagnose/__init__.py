"""Read a model's own figures back: posterior collapse, idle flow layers, dropped modes,
stalled training. Each check returns ``Finding``s with the number behind them."""

from nfvae.diagnose.findings import Finding, rank, render_markdown
from nfvae.diagnose.thresholds import Thresholds

__all__ = ["Finding", "Thresholds", "rank", "render_markdown"]
