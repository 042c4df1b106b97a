"""visualize(cfg): a checkpoint's figures as PNG files and an animated GIF.

The same figure functions as the TensorBoard callbacks draw them; which set is
drawn follows the checkpoint's module (``render`` dispatches on its type:
a 2-D density experiment, ``nfvae.toy``, or a FlowVAE). A new kind of model
registers its own ``render``; any checkpoint loads through ``nfvae.loading``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from functools import singledispatch
from pathlib import Path

import matplotlib.pyplot as plt
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from nfvae.loading import load_module
from nfvae.module import FlowVAEModule
from nfvae.tasks.common import build_datamodule
from nfvae.toy.module import ToyDensityModule
from nfvae.viz.figures import figure_to_image
from nfvae.viz.gif import write_gif
from nfvae.viz.toy import ToyFigureSettings, toy_figures, toy_frames
from nfvae.viz.vae import (
    FigureSet,
    LatentFigureSettings,
    vae_frames,
    vae_latent_figures,
    vae_sample_images,
)

log = logging.getLogger(__name__)


def _file_name(tag: str) -> str:
    return tag.replace("/", "_") + ".png"


def write_figure_set(figures: FigureSet, out: Path, dpi: int) -> list[Path]:
    """Figures and images as PNGs named after their tags; scalars into scalars.json."""
    written = []
    for tag, figure in figures.figures.items():
        path = out / _file_name(tag)
        figure.savefig(path, dpi=dpi)
        plt.close(figure)
        written.append(path)
    for tag, image in figures.images.items():
        path = out / _file_name(tag)
        array = (image.float() * 255).round().clamp(0, 255) if image.is_floating_point() else image
        Image.fromarray(array.byte().permute(1, 2, 0).contiguous().numpy()).save(path)
        written.append(path)
    if figures.scalars:
        path = out / "scalars.json"
        path.write_text(json.dumps(figures.scalars, indent=2))
        written.append(path)
    return written


def write_frames(frames: Iterable, path: Path, dpi: int, frame_ms: int, hold_last_ms: int) -> Path:
    write_gif([figure_to_image(frame, dpi) for frame in frames], path, frame_ms, hold_last_ms)
    return path


@singledispatch
def render(module: pl.LightningModule, cfg: DictConfig, out: Path) -> list[Path]:
    raise TypeError(f"visualize.py has no figures for {type(module).__name__} checkpoints")


@render.register
def _(module: ToyDensityModule, cfg: DictConfig, out: Path) -> list[Path]:
    settings = ToyFigureSettings(**OmegaConf.to_container(cfg.toy), seed=cfg.seed)
    figures = toy_figures(module.flow, module.target, module.base_log_prob, module.flow_name,
                          settings)
    written = write_figure_set(FigureSet(figures=figures), out, cfg.dpi)
    frames = toy_frames(module.flow, module.target, module.base_log_prob, module.flow_name,
                        settings)
    written.append(write_frames(frames, out / "layers.gif", cfg.gif.dpi, cfg.gif.frame_ms,
                                cfg.gif.hold_last_ms))
    return written


@render.register
def _(module: FlowVAEModule, cfg: DictConfig, out: Path) -> list[Path]:
    data_cfg = cfg.get("data") or module.hparams.data
    if data_cfg is None:
        raise ValueError("the checkpoint records no data config; pass data=<name>")
    x, y = build_datamodule(data_cfg).split(cfg.split)
    x, y = x[: cfg.num_points], y[: cfg.num_points]
    model = module.model
    noise = torch.randn(25, model.latent_dim, generator=torch.Generator().manual_seed(cfg.seed))
    basic, _ = vae_sample_images(model, x, y, cfg.num_reconstructions, cfg.upscale, noise)
    settings = LatentFigureSettings(**OmegaConf.to_container(cfg.latent), seed=cfg.seed)
    written = write_figure_set(basic, out, cfg.dpi)
    written += write_figure_set(vae_latent_figures(model, x, y, settings), out, cfg.dpi)
    frames = vae_frames(model, x, y, seed=cfg.seed)
    written.append(write_frames(frames, out / "layers.gif", cfg.gif.dpi, cfg.gif.frame_ms,
                                cfg.gif.hold_last_ms))
    return written


@torch.no_grad()
def visualize(cfg: DictConfig) -> list[Path]:
    """Load ``cfg.ckpt_path``, write its figures under ``cfg.out``; returns the files."""
    torch.manual_seed(cfg.seed)
    module = load_module(cfg.ckpt_path)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    written = render(module, cfg, out)
    log.info("wrote %d files to %s", len(written), out)
    return written
