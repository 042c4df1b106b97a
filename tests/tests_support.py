"""Helpers shared by tests that need a composed config outside a fixture."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_default(overrides=(), output_dir="/tmp/nfvae-test-run"):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={output_dir}", *overrides])


def read_events(run_dir: Path) -> EventAccumulator:
    """Every event of a run folder's ``tensorboard/`` (all images kept), loaded."""
    events = EventAccumulator(str(Path(run_dir) / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    return events
