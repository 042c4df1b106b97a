"""Training and evaluation through the real conf/, the function train.py calls, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from tensorboard.plugins.hparams import plugin_data_pb2

from nfvae.module import FlowVAEModule
from nfvae.loading import load_module
from nfvae.tasks.nll import nll
from nfvae.training import train
from tests_support import read_events

ROOT = Path(__file__).resolve().parents[1]
QUICK = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
    "test.num_samples=20",
]
SCALARS = ["train/loss", "train/neg_elbo", "train/recon", "train/kl", "train/sum_log_det",
           "train/beta", "val/neg_elbo", "zz_test/nll", "zz_test/neg_elbo"]
IMAGES = ["viz/images/reconstructions", "viz/images/samples",
          "viz/images/latent_before_after_flow"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One short planar run shared by the read-back, eval and API tests."""
    from hydra import compose, initialize_config_dir

    out = tmp_path_factory.mktemp("planar_run")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={out}", *QUICK])
    metrics = train(cfg)
    return out, metrics


def test_run_folder_has_scalars_images_histogram_and_checkpoints(trained_run):
    out, metrics = trained_run
    events = read_events(out)
    tags = events.Tags()
    for tag in SCALARS:
        assert tag in tags["scalars"], f"missing scalar {tag}"
        assert all(torch.isfinite(torch.tensor(e.value)) for e in events.Scalars(tag))
    for tag in IMAGES:
        assert tag in tags["images"], f"missing image {tag}"
        assert len(events.Images(tag)) == 2  # one per validation epoch
    assert "viz/latent/sum_log_det" in tags["histograms"]
    # 8 reconstructions in two rows of 8x8 digits upscaled x4, with 2-pixel padding
    recon = events.Images("viz/images/reconstructions")[-1]
    assert (recon.width, recon.height) == (8 * 34 + 2, 2 * 34 + 2)
    samples = events.Images("viz/images/samples")[-1]
    assert (samples.width, samples.height) == (5 * 34 + 2, 5 * 34 + 2)
    hparams = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        hparams["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["flow.name"].string_value == "planar"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        hparams["_hparams_/experiment"]).experiment
    # The tab's metrics are the run's own curves, not hp/* copies.
    assert "zz_test/nll" in {m.name.tag for m in experiment.metric_infos}
    assert not any(tag.startswith("hp/") for tag in tags["scalars"])
    checkpoints = {p.name for p in (out / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints and any(n.startswith("epoch_") for n in checkpoints)
    assert metrics["test/nll"] <= metrics["test/neg_elbo"] + 0.5


TRAIN_CURVES = ["train/loss", "train/neg_elbo", "train/recon", "train/kl",
                "train/sum_log_det", "train/beta"]


class ReadProgressBar(pl.Callback):
    """After every step: (the loss the progress bar shows, the step's loss)."""

    seen: list[tuple[float, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        shown = trainer.progress_bar_callback.get_metrics(trainer, pl_module)["train/loss"]
        ReadProgressBar.seen.append((float(shown), float(outputs["loss"])))


def test_default_run_writes_training_curves_at_the_shipped_interval(compose_cfg, tmp_path):
    """The shipped trainer (its log_every_n_steps untouched) on the default digits data,
    two epochs of 23 batches: every train/* curve at each step Lightning writes, no
    warning that an epoch is shorter than the interval, and a progress bar that shows
    each step's loss."""
    cfg = compose_cfg(["trainer.max_epochs=2", "test.enabled=false", "~callbacks.latent",
                       "~callbacks.projector",
                       "+callbacks.read_bar._target_=test_training.ReadProgressBar"])
    interval = cfg.trainer.log_every_n_steps
    ReadProgressBar.seen = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    assert not [w for w in caught if "logging interval" in str(w.message)]
    steps = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt",
                       weights_only=True)["global_step"]
    written = [s for s in range(steps) if (s + 1) % interval == 0]
    assert steps == 46 and len(written) >= 2
    events = read_events(tmp_path / "run")
    for tag in TRAIN_CURVES:
        assert [e.step for e in events.Scalars(tag)] == written, tag
        assert all(torch.isfinite(torch.tensor(e.value)) for e in events.Scalars(tag))
    # the bar shows the loss of the step just run, every step
    assert len(ReadProgressBar.seen) == steps
    assert all(shown == pytest.approx(loss) for shown, loss in ReadProgressBar.seen)
    assert len({shown for shown, _ in ReadProgressBar.seen}) == steps


def test_eval_gives_finite_nll_below_negative_elbo(trained_run, compose_cfg, tmp_path):
    out, _ = trained_run
    cfg = compose_cfg([f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", "eval.num_samples=200"],
                      config_name="eval", output_dir=tmp_path / "eval")
    results = nll(cfg)
    assert results["num_examples"] == 180
    assert torch.isfinite(torch.tensor(results["nll"]))
    assert results["nll"] < results["neg_elbo"]
    assert results["bpd"] == pytest.approx(results["nll"] / (64 * 0.6931471805599453))
    written = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert written["nll"] == results["nll"]


def test_python_api_loads_checkpoint_and_samples(trained_run):
    out, _ = trained_run
    module = FlowVAEModule.load_from_checkpoint(out / "checkpoints" / "last.ckpt",
                                                map_location="cpu", weights_only=True)
    assert module.hparams.flow["name"] == "planar" and len(module.model.flow) == 4
    images = module.sample(6)
    assert images.shape == (6, 1, 8, 8) and ((images >= 0) & (images <= 1)).all()
    x = torch.bernoulli(torch.full((3, 1, 8, 8), 0.3))
    assert module.reconstruct(x).shape == x.shape
    log_px = module.log_likelihood(x, num_samples=50)
    assert log_px.shape == (3,) and torch.isfinite(log_px).all() and (log_px < 0).all()
    # The loaded weights are the saved ones.
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, state[name])


@pytest.mark.parametrize("flow", ["none", "radial", "planar"])
@pytest.mark.parametrize("amortized", ["true", "false"])
def test_each_core_flow_trains_with_finite_losses(flow, amortized, compose_cfg):
    if flow == "none" and amortized == "true":
        pytest.skip("the plain VAE has no flow parameters to amortize")
    layers = [] if flow == "none" else ["flow.num_layers=2"]
    cfg = compose_cfg([f"flow={flow}", f"flow.amortized={amortized}", *layers,
                       *QUICK, "trainer.max_epochs=1", "~callbacks.images"])
    metrics = train(cfg)
    for key in ("val/neg_elbo", "test/nll", "test/neg_elbo"):
        assert torch.isfinite(torch.tensor(metrics[key])), key


def test_mnist_trains_offline_from_shared_data(data_dir, compose_cfg):
    cfg = compose_cfg(["data=mnist", f"data.data_dir={data_dir}", "data.download=false",
                       *QUICK, "trainer.max_epochs=1", "trainer.limit_val_batches=1",
                       "test.enabled=false"])
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["val/neg_elbo"]))


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / args[0]), *args[1:]], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_cli_help_lists_groups(tmp_path):
    result = run_cli("train.py", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for group in ("data: digits, mnist", "flow:", "trainer:", "logger:", "callbacks:"):
        assert group.split(":")[0] + ":" in result.stdout
    assert "planar" in result.stdout and "radial" in result.stdout


def test_cli_unknown_flow_names_the_valid_options(tmp_path):
    result = run_cli("train.py", "flow=nope", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'flow/nope'" in result.stderr
    assert "planar" in result.stderr and "radial" in result.stderr


@pytest.mark.slow
def test_cli_sweep_runs_each_flow(tmp_path):
    result = run_cli("train.py", "-m", "flow=none,planar,radial", "hydra.sweep.dir=sweep",
                     *QUICK, "trainer.max_epochs=1", "~callbacks.images", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for job in range(3):
        run = tmp_path / "sweep" / str(job)
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert (run / ".hydra" / "config.yaml").is_file()
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_cli_train_then_eval(tmp_path):
    result = run_cli("train.py", "hydra.run.dir=run", *QUICK, "trainer.max_epochs=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    result = run_cli("eval.py", f"ckpt_path={ckpt}", "eval.num_samples=50",
                     "hydra.run.dir=evalrun", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout[result.stdout.index("{"):])
    assert printed["nll"] > 0 and (tmp_path / "evalrun" / "eval.json").is_file()


def test_load_checkpoint_rejects_missing_and_truncated_files(trained_run, tmp_path):
    out, _ = trained_run
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_module(tmp_path / "nope.ckpt")
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes((out / "checkpoints" / "last.ckpt").read_bytes()[:1000])
    with pytest.raises(RuntimeError, match="could not load checkpoint .*broken.ckpt"):
        load_module(broken)


def test_evaluation_binarization_does_not_follow_the_run_seed():
    from nfvae.data import DigitsDataModule

    first, second = DigitsDataModule(seed=1), DigitsDataModule(seed=2)
    first.setup()
    second.setup()
    assert torch.equal(first.split("test")[0], second.split("test")[0])
    assert set(first.split("test")[0].unique().tolist()) == {0.0, 1.0}
    other = DigitsDataModule(seed=1, binarize_seed=5)
    other.setup()
    assert not torch.equal(first.split("test")[0], other.split("test")[0])


def test_hparams_include_module_settings_but_not_its_nested_groups(compose_cfg):
    from nfvae.hparams import flat_hparams

    flat = flat_hparams(compose_cfg([]))
    assert flat["module.test_num_samples"] == 100 and flat["module.skip_nonfinite"] is False
    assert flat["flow.name"] == "planar"
    assert not any("_target_" in key or "_partial_" in key for key in flat)
    assert not any(key.startswith("module.model.") for key in flat)
