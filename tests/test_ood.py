"""task=ood: AUROC against references, and the whole command on tiny real runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from sklearn.metrics import roc_auc_score
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nfvae.tasks.ood import auroc
from nfvae.training import train
from nfvae.validation import ConfigError, validate

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["trainer.max_epochs=1", "trainer.limit_train_batches=10",
         "trainer.enable_progress_bar=false", "~callbacks.progress_bar", "~callbacks.images",
         "test.enabled=false"]


@pytest.mark.parametrize("seed", [0, 1])
def test_auroc_matches_sklearn_and_pair_counting(seed):
    generator = torch.Generator().manual_seed(seed)
    neg = torch.randint(0, 12, (40,), generator=generator).double()  # many ties
    pos = torch.randint(4, 16, (25,), generator=generator).double()
    expected = roc_auc_score(np.r_[np.zeros(40), np.ones(25)], torch.cat([neg, pos]).numpy())
    pairs = (pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()
    assert auroc(neg, pos) == pytest.approx(expected, abs=1e-12)
    assert auroc(neg, pos) == pytest.approx(float(pairs.mean()), abs=1e-12)
    assert auroc(torch.zeros(3), torch.ones(2)) == 1.0 and auroc(torch.ones(3), torch.zeros(2)) == 0


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    """An MLP VAE trained a few steps on the built-in 8x8 digits."""
    from hydra import compose, initialize_config_dir

    out = tmp_path_factory.mktemp("digits_run")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={out}", *QUICK])
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


def write_npz(path, images):
    np.savez(path, train=images, test=images)
    return path


def run_ood(compose_cfg, tmp_path, checkpoint, overrides):
    cfg = compose_cfg([f"ckpt_path={checkpoint}", "task=ood", "eval.num_samples=8",
                       "task.max_examples=60", *overrides],
                      config_name="eval", output_dir=tmp_path / "ood")
    return instantiate(cfg.task)(cfg), tmp_path / "ood"


def test_tiny_run_gives_auroc_json_png_and_tensorboard_figure(digits_checkpoint, compose_cfg,
                                                                 tmp_path):
    # Grey-level noise of the digits' shape: binarized to the model's input, then scored.
    noise = np.random.default_rng(0).random((80, 8, 8)).astype(np.float32)
    path = write_npz(tmp_path / "noise.npz", noise)
    results, out = run_ood(compose_cfg, tmp_path, digits_checkpoint,
                           ["ood_data=npz", f"+task.other_data.path={path}", "+task.other_data.binarize=none"])
    assert 0.0 <= results["auroc"] <= 1.0
    assert results["auroc"] > 0.8, "uniform noise should look far less likely than digits"
    assert results["other_binarized"] is True
    assert results["in_distribution_nll"]["n"] == 60 and results["other_nll"]["n"] == 60
    assert json.loads((out / "ood.json").read_text())["auroc"] == results["auroc"]
    with Image.open(out / "ood_nll_histograms.png") as png:
        assert png.size[0] > 300 and png.size[1] > 200
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert "ood/nll_histograms" in tags["images"]
    assert {"ood/nll_in_distribution", "ood/nll_other"} <= set(tags["histograms"])
    assert events.Scalars("ood/auroc")[0].value == pytest.approx(results["auroc"], abs=1e-6)


def test_in_distribution_nll_is_task_nll_on_the_same_checkpoint(digits_checkpoint, compose_cfg,
                                                                tmp_path):
    """One NLL path with fixed noise per example: task=ood scores the test images exactly
    as task=nll does (with fresh noise the two differed by the Monte-Carlo error)."""
    noise = np.random.default_rng(0).random((80, 8, 8)).astype(np.float32)
    path = write_npz(tmp_path / "noise.npz", noise)
    ood_cfg = compose_cfg([f"ckpt_path={digits_checkpoint}", "task=ood", "eval.num_samples=8",
                           "ood_data=npz", f"+task.other_data.path={path}"],
                          config_name="eval", output_dir=tmp_path / "ood")
    nll_cfg = compose_cfg([f"ckpt_path={digits_checkpoint}", "eval.num_samples=8"],
                          config_name="eval", output_dir=tmp_path / "nll")
    assert nll_cfg.task._target_ == "nfvae.tasks.nll.nll"  # the default task
    scored = instantiate(ood_cfg.task)(ood_cfg)["in_distribution_nll"]
    reference = instantiate(nll_cfg.task)(nll_cfg)
    assert scored["n"] == reference["num_examples"]
    assert scored["mean"] == pytest.approx(reference["nll"], rel=1e-6, abs=0)


def test_other_shape_is_refused(digits_checkpoint, compose_cfg, tmp_path):
    path = write_npz(tmp_path / "six.npz", np.zeros((10, 6, 6), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"shape \(1, 6, 6\), but the model takes \(1, 8, 8\)"):
        run_ood(compose_cfg, tmp_path, digits_checkpoint, ["ood_data=npz",
                                                           f"+task.other_data.path={path}"])


def test_unknown_or_missing_ood_data_is_refused(digits_checkpoint, compose_cfg, tmp_path):
    with pytest.raises(ValueError, match="no such data config; choose one of .*omniglot"):
        run_ood(compose_cfg, tmp_path, digits_checkpoint, ["ood_data=nonexistent"])
    with pytest.raises(ValueError, match="task=ood needs the other dataset: ood_data="):
        run_ood(compose_cfg, tmp_path, digits_checkpoint, [])


@pytest.mark.slow
def test_eval_cli_mnist_against_omniglot(data_dir, shared_file, tmp_path):
    """The documented command, through eval.py, on the real datasets."""
    shared_file("omniglot/images_background.npz")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.output_dir={tmp_path / 'mnist'}", "data=mnist", "data.download=false",
            f"paths.data_dir={data_dir}", "trainer.limit_val_batches=2", *QUICK])
    train(cfg)
    out = tmp_path / "ood"
    subprocess.run(
        [sys.executable, "eval.py", "task=ood", "ood_data=omniglot",
         f"ckpt_path={tmp_path / 'mnist' / 'checkpoints' / 'last.ckpt'}",
         f"paths.data_dir={data_dir}", "eval.num_samples=4", "task.max_examples=100",
         f"hydra.run.dir={out}"],
        cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)
    results = json.loads((out / "ood.json").read_text())
    assert 0.0 <= results["auroc"] <= 1.0 and results["other"] == "omniglot"
    assert results["other_binarized"] is False  # omniglot's test split is binarized already
    assert (out / "ood_nll_histograms.png").is_file()


def test_old_ood_option_spellings_are_told_their_new_names(compose_cfg, tmp_path):
    cfg = compose_cfg(["ckpt_path=x.ckpt", "task=ood", "+ood.data.binarize=static"],
                      config_name="eval", output_dir=tmp_path / "ood")
    with pytest.raises(ConfigError, match=r"\+task\.other_data\.<key>=<value>"):
        validate(cfg)
    # The short spelling of the other dataset still works, as the shipped config says.
    cfg = compose_cfg(["ckpt_path=x.ckpt", "task=ood", "ood_data=omniglot"],
                      config_name="eval", output_dir=tmp_path / "ood")
    assert cfg.task.other == "omniglot" and cfg.task.max_examples is None
    validate(cfg)
