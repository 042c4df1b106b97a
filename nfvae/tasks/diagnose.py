"""``python eval.py task=diagnose ckpt_path=...``: the health report of any checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from nfvae.diagnose.findings import render_markdown
from nfvae.diagnose.report import diagnose_module
from nfvae.diagnose.thresholds import Thresholds
from nfvae.tasks.common import check_output_dir, checkpoint_and_data

log = logging.getLogger(__name__)


def run_events_dir(ckpt_path: str | Path) -> Path | None:
    """<run folder>/tensorboard for a checkpoint in <run folder>/checkpoints/, if there."""
    path = Path(ckpt_path).resolve()
    for run_dir in (path.parent.parent, path.parent):
        if (run_dir / "tensorboard").is_dir():
            return run_dir / "tensorboard"
    return None


@torch.no_grad()
def diagnose(cfg: DictConfig, gaps: bool = False) -> dict:
    """The findings of ``diagnose_module`` for ``cfg.ckpt_path`` (any kind of model),
    with its run's event files when they lie beside it; writes diagnose.md and .json."""
    torch.manual_seed(cfg.seed)
    module, datamodule = checkpoint_and_data(cfg, need_data=False)
    thresholds = Thresholds.from_config(OmegaConf.to_container(cfg.get("diagnose") or {}))
    events = run_events_dir(cfg.ckpt_path)
    findings, scalars = diagnose_module(module, datamodule, events, thresholds, gaps)
    report = render_markdown(findings, title=f"Diagnosis of {Path(cfg.ckpt_path).resolve()}")
    out = check_output_dir(cfg.paths.output_dir)
    (out / "diagnose.md").write_text(report)
    results = {"checkpoint": str(Path(cfg.ckpt_path).resolve()),
               "events": str(events) if events else None,
               "findings": [f.as_dict() for f in findings], "scalars": scalars}
    (out / "diagnose.json").write_text(json.dumps(results, indent=2))
    print(report)
    log.info("wrote %s and %s", out / "diagnose.md", out / "diagnose.json")
    return results
