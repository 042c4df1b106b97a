"""2-D density experiments: the objectives against independent integrals, the run
through the real conf/ with its event files read back, visualize.py on its
checkpoint, and the thresholds trained runs reach."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.distributions import MultivariateNormal

from nfvae.flows import FLOW_FAMILIES, stack
from nfvae.loading import MODULE_KEY
from nfvae.toy.module import MaximumLikelihoodModule, ReverseKLModule
from nfvae.toy.targets import U1, EightGaussians
from nfvae.training import train
from nfvae.tasks.visualize import visualize

NO_FLOW = {"_target_": "nfvae.flows.stack", "_partial_": True, "name": "none", "family": None,
           "num_layers": 0, "amortized": False}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
INVERTIBLE = [name for name in ("spline", "realnvp", "glow") if name in FLOW_FAMILIES and
              stack(2, None, partial(FLOW_FAMILIES[name]), 1, amortized=False).has_inverse]
QUIET = ["trainer.enable_progress_bar=false", "~callbacks.progress_bar"]


def read_events(run_dir) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tensorboard"),
                              size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


def hparams_session(events: EventAccumulator):
    """(hparams dict, metric names) from the HParams plugin's session start and experiment."""
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]).experiment
    hparams = {k: (v.string_value or v.number_value or v.bool_value)
               for k, v in start.hparams.items()}
    return hparams, {m.name.tag for m in experiment.metric_infos}


def test_reverse_kl_matches_the_kl_integrated_on_a_grid():
    """With no flow, q = N(0, I): the module's Monte-Carlo KL(q || p) for U1 equals
    sum q log(q / p) dA on a grid, p = exp(-U1) / Z."""
    module = ReverseKLModule(data_shape=[2], target={"_target_": "nfvae.toy.targets.U1"},
                             flow=NO_FLOW, optimizer=ADAM)
    module.eval()
    z0 = torch.randn(400_000, 2, generator=torch.Generator().manual_seed(0))
    values = module.losses(z0)
    axis = torch.linspace(-8, 8, 1601, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    log_q = -0.5 * grid.pow(2).sum(-1) - math.log(2 * math.pi)
    log_p = U1().log_prob(grid) - U1().log_normalizer
    expected = float((log_q.exp() * (log_q - log_p)).sum() * (axis[1] - axis[0]) ** 2)
    assert abs(float(values["kl"]) - expected) < 0.02
    assert float(values["loss"]) == pytest.approx(float(values["kl"]) - U1().log_normalizer)


def test_reverse_kl_anneals_the_energy_in_training_only():
    module = ReverseKLModule(data_shape=[2], target={"_target_": "nfvae.toy.targets.U1"},
                             flow=NO_FLOW, optimizer=ADAM, beta_start=0.1, anneal_steps=100)
    module.train()
    assert module.beta == pytest.approx(0.1)  # no trainer yet: step 0
    values = module.losses(torch.randn(1000, 2))
    assert "beta" in values and float(values["loss"]) != pytest.approx(float(values["kl"]))
    module.eval()
    assert module.beta == 1.0
    with pytest.raises(ValueError, match="beta_start"):
        ReverseKLModule(data_shape=[2], target={"_target_": "nfvae.toy.targets.U1"},
                        flow=NO_FLOW, optimizer=ADAM, beta_start=0.0)


def test_max_likelihood_initialises_glow_actnorm_from_its_first_training_batch():
    """Glow's data-dependent start, in the direction maximum likelihood runs the flow
    (data -> base): the first training batch comes out of the inverse standardised per
    coordinate; evaluation before it (the sanity check) leaves the flow untouched."""
    glow = {**NO_FLOW, "name": "glow", "num_layers": 1,
            "family": {"_target_": "nfvae.flows.GlowStep", "_partial_": True}}
    module = MaximumLikelihoodModule(data_shape=[2], flow=glow, optimizer=ADAM,
                                     target={"_target_": "nfvae.toy.targets.TwoMoons"})
    norm = module.flow.layers[0].actnorm
    x = 4.0 + 3.0 * torch.randn(512, 2)
    module.losses(x)
    assert not norm.initialized
    module.on_train_batch_start((x,), 0)
    assert norm.initialized
    # The inverse runs coupling and linear map first, so standardised is their output
    # pushed through ActNorm's inverse.
    with torch.no_grad():
        z = module.flow.layers[0].linear.inverse(module.flow.layers[0].coupling.inverse(x)[0])[0]
        z0, _ = norm.inverse(z)
    torch.testing.assert_close(z0.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z0.std(0, unbiased=False), torch.ones(2), atol=1e-5, rtol=0)


def test_max_likelihood_nll_and_kl_against_torch_distributions():
    module = MaximumLikelihoodModule(
        data_shape=[2], target={"_target_": "nfvae.toy.targets.EightGaussians"},
        flow=NO_FLOW, optimizer=ADAM)
    module.eval()
    x, _ = EightGaussians().sample(5000, torch.Generator().manual_seed(0))
    values = module.losses(x)
    log_q = MultivariateNormal(torch.zeros(2), torch.eye(2)).log_prob(x)
    torch.testing.assert_close(values["nll"], -log_q.mean())
    torch.testing.assert_close(values["kl"], (EightGaussians().log_prob(x) - log_q).mean())


def test_objectives_reject_the_wrong_target_or_flow():
    planar = {**NO_FLOW, "name": "planar", "num_layers": 2,
              "family": {"_target_": "nfvae.flows.PlanarFlow", "_partial_": True}}
    with pytest.raises(ValueError, match="closed-form inverse.*'planar' has none"):
        MaximumLikelihoodModule(data_shape=[2], flow=planar, optimizer=ADAM,
                                target={"_target_": "nfvae.toy.targets.TwoMoons"})
    with pytest.raises(TypeError, match="needs a SampleTarget, got U1"):
        MaximumLikelihoodModule(data_shape=[2], flow=NO_FLOW, optimizer=ADAM,
                                target={"_target_": "nfvae.toy.targets.U1"})
    with pytest.raises(TypeError, match="needs a EnergyTarget, got TwoMoons"):
        ReverseKLModule(data_shape=[2], flow=NO_FLOW, optimizer=ADAM,
                        target={"_target_": "nfvae.toy.targets.TwoMoons"})
    with pytest.raises(ValueError, match="2-D but the data are 3-D"):
        ReverseKLModule(data_shape=[3], flow=NO_FLOW, optimizer=ADAM,
                        target={"_target_": "nfvae.toy.targets.U1"})


# The figures' sizes at TensorBoard's 80 dpi (nfvae.viz.density.grid_figsize and the
# geometry figure's 2.2-inch panels): (width, height) in pixels.
TOY_IMAGE_SIZES = {
    "toy/target_vs_learned": (436, 244),
    "toy/layer_strip": (80 * (5 * 2 + 1.45), 244),   # K = 4: panels k = 0..4
    "toy/samples_over_target": (324, 364),
    "toy/layer_geometry": (728, 224),                 # layers 1..4 in one row
}


def test_energy_run_logs_figures_scalars_hparams_and_visualizes(compose_cfg, tmp_path):
    out = tmp_path / "u1"
    cfg = compose_cfg(["experiment=toy/u1", "flow=planar", "flow.num_layers=4",
                       "trainer.max_epochs=2", "data.steps_per_epoch=5", "data.num_val=512",
                       "data.num_test=512", "callbacks.density.every_n_epochs=1",
                       "callbacks.density.grid_size=40", "trainer.log_every_n_steps=1", *QUIET],
                      output_dir=out)
    metrics = train(cfg)
    assert math.isfinite(metrics["test/kl"]) and metrics["test/kl"] > 0
    events = read_events(out)
    tags = events.Tags()
    for tag, (width, height) in TOY_IMAGE_SIZES.items():
        assert f"viz/{tag}" in tags["images"], f"missing image viz/{tag}"
        images = events.Images(f"viz/{tag}")
        assert len(images) == 2  # both epochs: the first and the last
        assert (images[-1].width, images[-1].height) == (int(width), height), tag
    for tag in ("train/loss", "train/kl", "train/beta", "val/loss", "val/kl", "zz_test/kl"):
        assert tag in tags["scalars"], f"missing scalar {tag}"
    hparams, metric_tags = hparams_session(events)
    assert hparams["data.target"] == "U1"
    assert hparams["flow.name"] == "planar" and hparams["flow.num_layers"] == 4
    assert {"val/kl", "zz_test/kl"} <= metric_tags
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint[MODULE_KEY] == "nfvae.toy.module.ReverseKLModule"

    viz_cfg = compose_cfg([f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
                           f"out={tmp_path / 'figures'}", "toy.grid_size=40"],
                          config_name="visualize", output_dir=tmp_path / "viz")
    written = {p.name: p for p in visualize(viz_cfg)}
    for tag, (width, height) in TOY_IMAGE_SIZES.items():
        png = Image.open(written[tag.replace("/", "_") + ".png"])
        # visualize.py draws at 100 dpi: the same figure, 1.25 times the pixels
        # (give or take matplotlib's rounding).
        assert abs(png.size[0] - width * 1.25) <= 1 and abs(png.size[1] - height * 1.25) <= 1, tag
    gif = Image.open(written["layers.gif"])
    assert gif.n_frames == 5 and gif.is_animated  # the base and each of the 4 layers


@pytest.mark.skipif(not INVERTIBLE, reason="no invertible flow family registered")
def test_sample_run_trains_by_maximum_likelihood_and_draws_through_the_inverse(compose_cfg,
                                                                                tmp_path):
    family = INVERTIBLE[0]
    out = tmp_path / "moons"
    cfg = compose_cfg(["experiment=toy/two_moons", f"flow={family}", "flow.num_layers=2",
                       "flow.family.hidden_dims=[16,16]", "trainer.max_epochs=1",
                       "data.num_train=512", "data.num_val=256", "data.num_test=256",
                       "callbacks.density.grid_size=30", "trainer.log_every_n_steps=1", *QUIET],
                      output_dir=out)
    metrics = train(cfg)
    for key in ("val/nll", "val/kl", "test/nll", "test/kl"):
        assert math.isfinite(metrics[key]), key
    events = read_events(out)
    assert {"viz/toy/layer_strip", "viz/toy/target_vs_learned"} <= set(events.Tags()["images"])
    hparams, _ = hparams_session(events)
    assert hparams["data.target"] == "TwoMoons"


def test_unknown_or_wrong_toy_setups_fail_early(compose_cfg, tmp_path):
    cfg = compose_cfg(["experiment=toy/two_moons", "flow=radial", *QUIET],
                      output_dir=tmp_path / "bad")
    with pytest.raises(Exception, match="closed-form inverse"):
        train(cfg)


@pytest.mark.slow
def test_u1_with_32_planar_layers_reaches_kl_below_0_1(compose_cfg, tmp_path):
    """Rezende & Mohamed's U1 with K = 32 planar layers: 1200 annealed steps (15-30 s);
    it reaches ~0.03 nats (a full run of the experiment, 3000 steps, ~0.01)."""
    cfg = compose_cfg(["experiment=toy/u1", "flow=planar", "flow.num_layers=32",
                       "trainer.max_epochs=12", "data.steps_per_epoch=100",
                       "module.anneal_steps=500", "optimizer.lr=1e-2", "~callbacks.density",
                       *QUIET], output_dir=tmp_path / "u1")
    metrics = train(cfg)
    assert metrics["test/kl"] < 0.1, metrics


@pytest.mark.slow
@pytest.mark.skipif("spline" not in INVERTIBLE, reason="no spline flow registered")
def test_two_moons_with_spline_flow_reaches_kl_below_0_1(compose_cfg, tmp_path):
    """Two moons by maximum likelihood, 4 spline-coupling layers, 1580 steps (10-20 s);
    it reaches ~0.04 nats (benchmarks/bench_viz_toys.py runs the same)."""
    cfg = compose_cfg(["experiment=toy/two_moons", "flow=spline", "flow.num_layers=4",
                       "flow.family.num_bins=16", "flow.family.tail_bound=4.0",
                       "flow.family.hidden_dims=[64,64]", "optimizer.lr=5e-3",
                       "trainer.max_epochs=20", "~callbacks.density", *QUIET],
                      output_dir=tmp_path / "moons")
    metrics = train(cfg)
    assert metrics["test/kl"] < 0.1, metrics
    # The trained model drops neither moon: the diagnosis raises no false alarm.
    events = read_events(tmp_path / "moons")
    report = events.Tensors("diagnose/report/text_summary")[-1].tensor_proto.string_val[0]
    assert b"0 problem(s)" in report and b"all 2 modes covered" in report, report.decode()
