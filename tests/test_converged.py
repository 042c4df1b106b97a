"""experiment=iwae/mnist_<flow> (the converged study of benchmarks/study_converged.py):
the shipped configs are Burda et al.'s (2016) protocol, each runs through the real
Trainer, the learning rate follows the 3^i-epoch stages across a resume, and the
test-NLL curve lands in TensorBoard and test_curve.jsonl with its clock carried on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tests_support import read_events

from nfvae.curves import read_curve
from nfvae.nets import MLPDecoder, MLPEncoder
from nfvae.schedules import StagedLR
from nfvae.training import train

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment" / "iwae").glob("*.yaml")
                     if not p.stem.startswith("_"))
FLOW_LAYERS = {"none": 0, "planar": 10, "householder": 5, "sylvester_orthogonal": 4, "iaf": 4}


def test_there_is_a_file_for_every_flow_of_the_study():
    assert set(EXPERIMENTS) == {f"mnist_{flow}" for flow in FLOW_LAYERS}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_is_the_iwae_protocol(name, compose_cfg):
    cfg = compose_cfg([f"experiment=iwae/{name}"])
    flow = name.removeprefix("mnist_")
    assert cfg.flow.name == flow and cfg.flow.num_layers == FLOW_LAYERS[flow]
    assert cfg.data._target_ == "nfvae.data.MNISTDataModule" and cfg.data.binarize == "dynamic"
    assert (cfg.data.batch_size, cfg.data.val_size) == (20, 400)  # 59,600 training images
    assert cfg.model.latent_dim == 50
    for net in (cfg.model.encoder, cfg.model.decoder):
        assert list(net.hidden_dims) == [200, 200] and net.activation == "tanh"
    assert cfg.optimizer._target_ == "torch.optim.Adam"
    assert (cfg.optimizer.lr, list(cfg.optimizer.betas), cfg.optimizer.eps) == (
        1e-3, [0.9, 0.999], 1e-4)
    # 3^i epochs at 1e-3 * 10^(-i/7) (rounded as the authors' code does), i = 0..7.
    assert cfg.scheduler._target_ == "nfvae.schedules.StagedLR"
    assert list(cfg.scheduler.epochs) == [3**i for i in range(8)]
    assert [round(f, 2) for f in cfg.scheduler.factors] == [
        round(round(10 ** (1 - i / 7), 1) / 10, 2) for i in range(8)]
    assert cfg.module.scheduler == cfg.scheduler  # reaches the LightningModule
    assert cfg.trainer.max_epochs == sum(cfg.scheduler.epochs) == 3280
    assert (cfg.objective.beta_start, cfg.objective.warmup_epochs) == (1.0, 0)
    assert cfg.test.num_samples == 5000
    assert "early_stopping" not in cfg.callbacks
    assert cfg.callbacks.model_checkpoint.monitor is None  # the final model is scored
    assert cfg.callbacks.test_curve._target_ == "nfvae.curves.NLLCurveLogger"
    # Long-run defaults: no per-epoch images, scalars not every 50 steps.
    assert cfg.callbacks.images.every_n_epochs >= 100
    assert cfg.trainer.log_every_n_steps >= 1000


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_one_step(name, compose_cfg, data_dir):
    cfg = compose_cfg([
        f"experiment=iwae/{name}", f"paths.data_dir={data_dir}", "data.download=false",
        "trainer.fast_dev_run=true", "data.eval_batch_size=16",
        "callbacks.images.num_latent_points=16",
    ])
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/neg_elbo"])
    # A smoke run does not wait for a curve point (1000 images x 1000 samples).
    assert not (Path(cfg.paths.output_dir) / "test_curve.jsonl").exists()


def test_lr_stages_and_test_curve_through_a_resume(compose_cfg, data_dir, tmp_path):
    run = tmp_path / "run"

    def cfg(max_epochs, resume):
        return compose_cfg([
            "experiment=iwae/mnist_none", f"paths.data_dir={data_dir}", "data.download=false",
            f"trainer.max_epochs={max_epochs}", "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1", "test.enabled=false",
            "callbacks.test_curve.num_examples=8", "callbacks.test_curve.num_samples=20",
            "callbacks.images.num_latent_points=16", f"ckpt_path={'last' if resume else 'null'}",
        ], output_dir=run)

    train(cfg(4, resume=False))
    train(cfg(6, resume=True))

    lrs = {e.step: e.value for e in read_events(run).Scalars("train/lr")}
    per_epoch = [lrs[step] for step in sorted(lrs)]
    # Stage 0: 1 epoch at 1e-3; stage 1: 3 epochs at 7.2e-4; stage 2 from epoch 5 at 5.2e-4.
    assert per_epoch == pytest.approx([1e-3, 7.2e-4, 7.2e-4, 7.2e-4, 5.2e-4, 5.2e-4])

    points = read_curve(run / "test_curve.jsonl")
    # at_epochs 1, 2, 4 (4 was the first run's last epoch), and the resumed run's last, 6.
    assert [p["epoch"] for p in points] == [1, 2, 4, 6]
    assert [p["lr"] for p in points] == pytest.approx([1e-3, 7.2e-4, 7.2e-4, 5.2e-4])
    seconds = [p["train_seconds"] for p in points]
    assert all(b > a for a, b in zip(seconds, seconds[1:])), seconds  # the clock resumed
    assert all(p["train_cpu_seconds"] > 0 and p["rss_mb"] > 0 for p in points)
    # Validation and the figures drawn at its end (epoch 1, and the last) are counted.
    figure_seconds = [p["validation_and_figure_seconds"] for p in points]
    assert figure_seconds[0] > 0 and all(b >= a for a, b in zip(figure_seconds, figure_seconds[1:]))
    nll = {e.step: e.value for e in read_events(run).Scalars("zz_test_curve/nll")}
    assert sorted(nll) == [1, 2, 4, 6]
    assert nll[6] == pytest.approx(points[-1]["nll"], rel=1e-6)
    assert all(math.isfinite(v) and v > 0 for v in nll.values())


def test_curve_points_are_fixed_functions_of_the_weights(compose_cfg, data_dir):
    """Fixed noise: scoring the same weights twice gives the same NLL to the bit."""
    from nfvae.curves import NLLCurveLogger
    from nfvae.training import build_datamodule, build_module

    cfg = compose_cfg(["experiment=iwae/mnist_none", f"paths.data_dir={data_dir}",
                       "data.download=false"])
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg, datamodule.data_shape)
    logger = NLLCurveLogger(num_examples=10, num_samples=50, batch_size=4)
    torch.manual_seed(0)
    first = logger.score(datamodule, module)
    torch.manual_seed(1)  # another global RNG state must not matter
    assert logger.score(datamodule, module) == first
    # Another batch size cuts the subset differently; each example keeps its noise.
    assert NLLCurveLogger(num_examples=10, num_samples=50, batch_size=3).score(
        datamodule, module) == pytest.approx(first, rel=1e-6)
    assert all(math.isfinite(v) and v > 0 for v in first)


def test_mlp_activation_by_name():
    encoder = MLPEncoder((1, 28, 28), hidden_dims=[16, 16], activation="tanh")
    decoder = MLPDecoder(4, (1, 28, 28), hidden_dims=[16], activation="tanh")
    assert sum(isinstance(m, torch.nn.Tanh) for m in encoder.modules()) == 2
    assert sum(isinstance(m, torch.nn.Tanh) for m in decoder.modules()) == 1
    assert not any(isinstance(m, torch.nn.ReLU) for m in [*encoder.modules(), *decoder.modules()])
    with pytest.raises(ValueError, match="unknown activation 'tahn'"):
        MLPEncoder((1, 28, 28), activation="tahn")


def test_staged_lr_checks_its_stages():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="equal length"):
        StagedLR(optimizer, epochs=[1, 3], factors=[1.0])
    with pytest.raises(ValueError, match="epochs must all be >= 1"):
        StagedLR(optimizer, epochs=[1, 0], factors=[1.0, 0.5])
    with pytest.raises(ValueError, match="factors must all be > 0"):
        StagedLR(optimizer, epochs=[1, 2], factors=[1.0, 0.0])
    schedule = StagedLR(optimizer, epochs=[1, 2], factors=[1.0, 0.5])
    seen = []
    for _ in range(5):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert seen == [1.0, 0.5, 0.5, 0.5, 0.5]  # the last factor stays after the end
    assert json.loads(json.dumps(schedule.state_dict()["lr_lambdas"][0]))["factors"] == [1.0, 0.5]


def _driver():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "study_converged.py"
    spec = importlib.util.spec_from_file_location("study_converged", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_driver_covers_every_config_and_resumes_or_skips(tmp_path, compose_cfg):
    driver = _driver()
    assert {f"mnist_{flow}" for flow, _ in driver.ORDER} == set(EXPERIMENTS)
    assert driver.ORDER[:2] == [("none", 1), ("none", 2)]  # the reproduction first
    run = tmp_path / "none_seed1"
    args = driver.overrides("none", 1, run, tmp_path, 364)
    assert "ckpt_path=null" in args and "trainer.max_epochs=364" in args
    compose_cfg(args)  # every override names a real config key
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert "ckpt_path=last" in driver.overrides("none", 1, run, tmp_path, 364)
    assert not driver.is_finished(run, 364)
    (run / "result.json").write_text(json.dumps({"max_epochs": 364}))
    assert driver.is_finished(run, 364) and not driver.is_finished(run, 3280)
