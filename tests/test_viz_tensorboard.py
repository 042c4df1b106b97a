"""The VAE's dashboards: a short run through the real conf/ with every visual callback,
its event files read back (image tags and sizes, scalars, histograms, the embedding
projector's files, the HParams plugin), and visualize.py on its checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from nfvae.training import build_datamodule, train
from nfvae.viz.vae import LatentFigureSettings, vae_latent_figures

ROOT = Path(__file__).resolve().parents[1]
NUM_LAYERS = 4
RUN = ["model.latent_dim=2", "flow=planar", f"flow.num_layers={NUM_LAYERS}",
       "trainer.max_epochs=2", "trainer.limit_train_batches=4", "trainer.log_every_n_steps=1",
       "trainer.enable_progress_bar=false", "~callbacks.progress_bar", "test.num_samples=10",
       "callbacks.latent.every_n_epochs=1", "callbacks.projector.every_n_epochs=1"]

# (width, height) at TensorBoard's 80 dpi, from the figure sizes in nfvae.viz.latent_figures
# for latent size 2, K = 4 planar layers, 8x8 digits upscaled to 32 pixels.
IMAGE_SIZES = {
    "latent/posteriors": (896, 808),          # 11.2 x (2.4 * 4 rows + 0.5) inches
    "latent/aggregate_posterior": (880, 312),
    "latent/trajectories": (512, 416),
    "latent/active_units": (400, 400),
    "latent/log_det_per_layer": (480, 288),
    # image grids at one screen pixel per pixel: 4 pairs x (8 steps + 2 ends) of 34-pixel
    # cells (+2 padding), plus 1.6 x 0.9 inches of labels
    "latent/interpolations": (10 * 34 + 2 + 128, 4 * 34 + 2 + 72),
    "latent/traversals": (8 * 34 + 2 + 128, 2 * 34 + 2 + 72),   # 2 principal directions
    "images/latent_before_after_flow": (640, 320),
    "images/reconstructions": (8 * 34 + 2, 2 * 34 + 2),
    "images/samples": (5 * 34 + 2, 5 * 34 + 2),
}


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    from hydra import compose, initialize_config_dir

    out = tmp_path_factory.mktemp("vae_run")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={out}", *RUN])
    metrics = train(cfg)
    events = EventAccumulator(str(out / "tensorboard"),
                              size_guidance={"images": 0, "histograms": 0, "scalars": 0,
                                             "tensors": 0})
    events.Reload()
    return out, metrics, events


def test_every_figure_tag_has_its_size_each_drawing_epoch(vae_run):
    _, _, events = vae_run
    images = events.Tags()["images"]
    for tag, size in IMAGE_SIZES.items():
        assert f"viz/{tag}" in images, f"missing image viz/{tag}"
        logged = events.Images(f"viz/{tag}")
        assert len(logged) == 2, tag  # epochs 0 and 1 (the last)
        assert (logged[-1].width, logged[-1].height) == size, tag


def test_latent_scalars_and_per_layer_histograms(vae_run):
    _, _, events = vae_run
    tags = events.Tags()
    for tag in ("val/latent/active_units_z0", "val/latent/active_units_zK", "val/latent/kl_q0"):
        values = [e.value for e in events.Scalars(tag)]
        assert len(values) == 2 and all(v >= 0 for v in values), tag
    assert all(0 <= e.value <= 2 for e in events.Scalars("val/latent/active_units_zK"))
    for k in range(1, NUM_LAYERS + 1):
        histogram = events.Histograms(f"viz/latent/log_det/layer_{k:02d}")[-1].histogram_value
        assert histogram.num == 180 * 64  # validation points x posterior draws
    assert "viz/latent/sum_log_det" in tags["histograms"]


def test_embedding_projector_files(vae_run):
    out, _, _ = vae_run
    config = (out / "tensorboard" / "projector_config.pbtxt").read_text()
    assert config.count("tensor_name: \"latent_mean:") == 2  # one per drawing epoch
    folders = sorted(p for p in (out / "tensorboard").iterdir() if p.is_dir())
    last = folders[-1] / "latent_mean"
    rows = (last / "tensors.tsv").read_text().strip().splitlines()
    assert len(rows) == 180 and all(len(r.split("\t")) == 2 for r in rows)
    labels = (last / "metadata.tsv").read_text().split()
    assert len(labels) == 180 and set(labels) <= {str(d) for d in range(10)}
    sprite = Image.open(last / "sprite.png")
    assert sprite.size == (14 * 8, 14 * 8)  # ceil(sqrt(180)) 8x8 digits per side


def test_hparams_plugin_has_the_config_and_final_metrics(vae_run):
    _, metrics, events = vae_run
    content = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info",
            "_hparams_/session_end_info"} <= set(content)
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["flow.name"].string_value == "planar"
    assert start.hparams["model.latent_dim"].number_value == 2
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]).experiment
    # The tab's metrics are the run's own scalars; it shows each one's last value.
    assert {"val/neg_elbo", "zz_test/nll"} <= {m.name.tag for m in experiment.metric_infos}
    final = events.Scalars("zz_test/nll")[-1].value
    assert final == pytest.approx(metrics["test/nll"], rel=1e-5)


@pytest.mark.slow
def test_visualize_cli_writes_pngs_and_gif(vae_run, tmp_path):
    out, _, _ = vae_run
    result = subprocess.run(
        [sys.executable, str(ROOT / "visualize.py"),
         f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", f"out={tmp_path / 'figures'}",
         "hydra.run.dir=viz", "latent.grid_size=40"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = tmp_path / "figures"
    for tag, (width, height) in IMAGE_SIZES.items():
        png = Image.open(figures / (tag.replace("/", "_") + ".png"))
        if tag.startswith("images/") and tag != "images/latent_before_after_flow":
            assert png.size == (width, height), tag  # image grids are written as they are
        else:
            # 100 dpi: 1.25 times the pixels, give or take matplotlib's rounding
            assert abs(png.size[0] - width * 1.25) <= 1, tag
            assert abs(png.size[1] - height * 1.25) <= 1, tag
    gif = Image.open(figures / "layers.gif")
    assert gif.is_animated and gif.n_frames == NUM_LAYERS + 1
    scalars = json.loads((figures / "scalars.json").read_text())
    assert set(scalars) == {"latent/active_units_z0", "latent/active_units_zK", "latent/kl_q0"}


def test_latent_figures_for_a_larger_latent_space(compose_cfg, tmp_path):
    """Latent size 8 with radial layers: no 2-D densities, every other figure; traversals
    along the 3 top directions; an untrained flow with context from the encoder."""
    cfg = compose_cfg(["model.latent_dim=8", "flow=radial", "flow.num_layers=3"])
    datamodule = build_datamodule(cfg.data)
    module = instantiate(cfg.module, data_shape=list(datamodule.data_shape))
    module.eval()
    x, y = datamodule.split("val")
    figures = vae_latent_figures(module.model, x[:60], y[:60],
                                 LatentFigureSettings(num_samples=4, grid_size=20))
    assert set(figures.figures) == {"latent/active_units", "latent/trajectories",
                                    "latent/log_det_per_layer", "latent/interpolations",
                                    "latent/traversals"}
    assert 0 <= figures.scalars["latent/active_units_zK"] <= 8
    assert len(figures.histograms) == 3
    assert all(h.shape == (60 * 4,) and torch.isfinite(h).all()
               for h in figures.histograms.values())
    for figure in figures.figures.values():
        figure.clf()
