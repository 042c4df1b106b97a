"""task=ood: AUROC against references, and the whole command on tiny real runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from sklearn.metrics import roc_auc_score

from nfvae.data.noise import UniformNoiseDataModule
from nfvae.image_flow.data import image_levels
from nfvae.loading import load_module
from nfvae.tasks.common import build_datamodule, example_nlls
from nfvae.tasks.ood import (
    apply_transforms,
    auroc,
    comparison_table,
    detect_outliers,
    histogram_figure,
    parse_other,
)
from nfvae.training import train
from nfvae.validation import ConfigError, validate
from tests_support import read_events

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
                           ["ood_data=npz", f"+task.other_data.path={path}",
                            "+task.other_data.binarize=none"])
    assert list(results["others"]) == ["npz"]
    scored = results["others"]["npz"]
    assert scored["auroc"] > 0.8, "uniform noise should look far less likely than digits"
    assert scored["binarized"] is True and scored["transforms"] == [] and scored["data"] == "npz"
    assert results["in_distribution_nll"]["n"] == 60 and scored["nll"]["n"] == 60
    assert json.loads((out / "ood.json").read_text()) == results
    with Image.open(out / "ood_nll_histograms.png") as png:
        assert png.size[0] > 300 and png.size[1] > 200
    events = read_events(out)
    tags = events.Tags()
    assert "ood/nll_histograms" in tags["images"]
    assert {"ood/nll_in_distribution", "ood/nll_other/npz"} <= set(tags["histograms"])
    assert events.Scalars("ood/auroc/npz")[0].value == pytest.approx(scored["auroc"], abs=1e-6)


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
    with pytest.raises(ValueError, match="no such data config; choose one of .*omniglot"
                                         ".*uniform_noise.*:invert, :hflip, :vflip"):
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
        [sys.executable, "eval.py", "task=ood", "ood_data=[omniglot,mnist:hflip,uniform_noise]",
         "+task.other_data.mnist.download=false",
         f"ckpt_path={tmp_path / 'mnist' / 'checkpoints' / 'last.ckpt'}",
         f"paths.data_dir={data_dir}", "eval.num_samples=4", "task.max_examples=100",
         f"hydra.run.dir={out}"],
        cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)
    results = json.loads((out / "ood.json").read_text())
    others = results["others"]
    assert list(others) == ["omniglot", "mnist:hflip", "uniform_noise"]
    assert all(0.0 <= one["auroc"] <= 1.0 and one["nll"]["n"] == 100 for one in others.values())
    # omniglot's and MNIST's test splits are binarized by their configs; the noise here
    assert [one["binarized"] for one in others.values()] == [False, False, True]
    assert others["uniform_noise"]["auroc"] > 0.9
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


# -- several other sets in one call, transforms, noise, both model kinds --------------------------

def compose_eval(overrides, out):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("eval", overrides=[f"paths.output_dir={out}", *overrides])


def sk_auroc(nll_in, nll_out):
    """Scikit-learn's AUROC of "NLL flags the other set", as the reference."""
    labels = np.r_[np.zeros(len(nll_in)), np.ones(len(nll_out))]
    return roc_auc_score(labels, torch.cat([nll_in, nll_out]).numpy())


VAE_OTHERS = ["digits", "digits:invert", "uniform_noise"]


@pytest.fixture(scope="module")
def vae_scored(digits_checkpoint, tmp_path_factory):
    """The binary digits VAE against three other sets through the list spelling, with
    the images each example_nll call scored counted."""
    out = tmp_path_factory.mktemp("vae_ood")
    cfg = compose_eval([f"ckpt_path={digits_checkpoint}", "task=ood", "eval.num_samples=8",
                        "task.max_examples=60", f"ood_data=[{','.join(VAE_OTHERS)}]",
                        "+task.other_data.uniform_noise.shape=[1,8,8]"], out)
    module_class = type(load_module(digits_checkpoint))
    scored = []
    real = module_class.example_nll

    def counted(self, x, *args, **kwargs):
        scored.append(len(x))
        return real(self, x, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module_class, "example_nll", counted)
        results = instantiate(cfg.task)(cfg)
    return cfg, results, out, scored


def test_several_others_in_one_call_score_the_test_set_once(vae_scored):
    cfg, results, out, scored = vae_scored
    assert cfg.task.other == VAE_OTHERS
    assert list(results["others"]) == VAE_OTHERS
    assert sum(scored) == 60 * (1 + len(VAE_OTHERS)), "the test set once, each other set once"
    assert results["in_distribution"] == "Digits" and results["in_distribution_nll"]["n"] == 60
    assert json.loads((out / "ood.json").read_text()) == results
    others = results["others"]
    assert others["digits:invert"]["transforms"] == ["invert"]
    assert others["digits:invert"]["data"] == "digits"
    # the digits' test split is binarized by its own config; the grey noise here
    assert [others[n]["binarized"] for n in VAE_OTHERS] == [False, False, True]


def test_auroc_of_identical_data_is_one_half_and_of_noise_near_one(vae_scored, digits_checkpoint):
    """Recomputed from the images: the test set, its inversion 1 - x, and the shipped
    uniform noise at 8x8 binarized with the run's seed, scored by the module and
    compared by scikit-learn's AUROC."""
    cfg, results, _, _ = vae_scored
    module = load_module(digits_checkpoint)
    x_in = build_datamodule(module.hparams["data"]).split("test")[0][:60]
    assert set(x_in.unique().tolist()) == {0.0, 1.0}
    noise = UniformNoiseDataModule(shape=[1, 8, 8]).split("test")[0][:60]
    noise = torch.bernoulli(noise, generator=torch.Generator().manual_seed(cfg.seed))
    nll_in = example_nlls(module, x_in, cfg.eval)
    expected = {"digits": x_in, "digits:invert": 1 - x_in, "uniform_noise": noise}
    others = results["others"]
    assert results["in_distribution_nll"]["mean"] == pytest.approx(float(nll_in.mean()), rel=1e-6)
    for name, images in expected.items():
        nll_out = example_nlls(module, images, cfg.eval)
        assert others[name]["nll"]["mean"] == pytest.approx(float(nll_out.mean()), rel=1e-6)
        assert others[name]["auroc"] == pytest.approx(sk_auroc(nll_in, nll_out), abs=1e-9)
    assert others["digits"]["auroc"] == 0.5, "the same images, the same NLLs"
    assert others["uniform_noise"]["auroc"] > 0.9


def test_one_histogram_panel_per_other_set_in_png_and_tensorboard(vae_scored):
    _, results, out, _ = vae_scored
    with Image.open(out / "ood_nll_histograms.png") as png:
        assert png.size[0] > 3 * 400, "three panels side by side"
    events = read_events(out)
    tags = events.Tags()
    assert tags["images"] == ["ood/nll_histograms"]
    assert set(tags["histograms"]) == {"ood/nll_in_distribution", "ood/nll_other/digits",
                                       "ood/nll_other/digits_invert",
                                       "ood/nll_other/uniform_noise"}
    for name, tag in zip(VAE_OTHERS, ("digits", "digits_invert", "uniform_noise")):
        assert events.Scalars(f"ood/auroc/{tag}")[0].value == pytest.approx(
            results["others"][name]["auroc"], abs=1e-6)


@pytest.fixture(scope="module")
def glow_scored(tmp_path_factory):
    """experiment=glow/digits (grey levels) trained 4 epochs, then detect_outliers called
    from Python with a composed eval config whose task is the default (nll)."""
    from tests_support import compose_default

    run = tmp_path_factory.mktemp("glow_digits")
    train(compose_default(["experiment=glow/digits", "trainer.max_epochs=4",
                           "trainer.enable_progress_bar=false", "~callbacks.progress_bar",
                           "~callbacks.images", "~callbacks.diagnose", "test.enabled=false"],
                          output_dir=run))
    checkpoint = run / "checkpoints" / "last.ckpt"
    cfg = compose_eval([f"ckpt_path={checkpoint}", "eval.num_samples=2"],
                       tmp_path_factory.mktemp("glow_ood"))
    results = detect_outliers(cfg, other=["digits:hflip", "digits:vflip", "uniform_noise"],
                              other_data={"uniform_noise": {"shape": [1, 8, 8]}},
                              max_examples=100)
    return cfg, results, checkpoint


def test_grey_flow_scores_grey_transformed_digits_and_noise(glow_scored):
    """The flow saw 17 grey levels: the other digits arrive grey (digits.yaml would
    binarize them), flipped as named, and nothing is binarized."""
    cfg, results, checkpoint = glow_scored
    module = load_module(checkpoint)
    assert type(module).__name__ == "FlowDensityModule"
    x_in = build_datamodule(module.hparams["data"]).split("test")[0][:100]
    assert len(x_in.unique()) > 2
    noise = UniformNoiseDataModule(shape=[1, 8, 8]).split("test")[0][:100]
    nll_in = example_nlls(module, x_in, cfg.eval)
    expected = {"digits:hflip": torch.from_numpy(np.flip(x_in.numpy(), -1).copy()),
                "digits:vflip": torch.from_numpy(np.flip(x_in.numpy(), -2).copy()),
                "uniform_noise": noise}
    others = results["others"]
    assert results["in_distribution_nll"]["mean"] == pytest.approx(float(nll_in.mean()), rel=1e-6)
    for name, images in expected.items():
        assert others[name]["binarized"] is False
        nll_out = example_nlls(module, images, cfg.eval)
        assert others[name]["nll"]["mean"] == pytest.approx(float(nll_out.mean()), rel=1e-6)
        assert others[name]["auroc"] == pytest.approx(sk_auroc(nll_in, nll_out), abs=1e-9)
    assert others["uniform_noise"]["auroc"] > 0.95
    assert others["uniform_noise"]["nll"]["bpd"] > results["in_distribution_nll"]["bpd"] + 1


def test_comparison_table_puts_models_side_by_side(vae_scored, glow_scored):
    _, vae, out, _ = vae_scored
    _, glow, _ = glow_scored
    table = comparison_table({"flow-VAE": json.loads((out / "ood.json").read_text()),
                              "Glow": glow})
    assert table == comparison_table({"flow-VAE": vae, "Glow": glow})
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in table.strip().splitlines()]
    assert rows[0] == ["data", "AUROC flow-VAE", "AUROC Glow", "bits/dim flow-VAE",
                       "bits/dim Glow"]
    assert rows[1][0] == "---"
    by_name = {row[0]: row[1:] for row in rows[2:]}
    assert list(by_name) == ["Digits (in-distribution)", *VAE_OTHERS, "digits:hflip",
                             "digits:vflip"]
    assert by_name["Digits (in-distribution)"] == [
        "–", "–", f"{vae['in_distribution_nll']['bpd']:.3f}",
        f"{glow['in_distribution_nll']['bpd']:.3f}"]
    noise_v, noise_g = vae["others"]["uniform_noise"], glow["others"]["uniform_noise"]
    assert by_name["uniform_noise"] == [f"{noise_v['auroc']:.3f}", f"{noise_g['auroc']:.3f}",
                                        f"{noise_v['nll']['bpd']:.3f}",
                                        f"{noise_g['nll']['bpd']:.3f}"]
    assert by_name["digits:hflip"][0] == "–" and by_name["digits:invert"][1] == "–"


def test_histograms_show_every_image_and_a_log_axis_for_spans_of_orders_of_magnitude():
    """A flow can give noise 10^4 times the NLL of data: linear bins would hide both
    sets in one bar, and float32 bin edges dropped the set's extreme images."""
    dims = 64
    nats = dims * math.log(2)  # per bit/dim
    nll_in = (6.7 + 0.3 * torch.randn(90, generator=torch.Generator().manual_seed(0))) * nats
    others = {"near": nll_in * 1.1, "noise": torch.full((40,), 1e5 * nats),
              "one": nll_in[:1]}
    figure = histogram_figure(nll_in, others, "Digits", {n: 0.5 for n in others}, dims)
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["near: AUROC 0.500", "noise: AUROC 0.500",
                                               "one: AUROC 0.500"]
    assert [ax.get_xscale() for ax in axes] == ["linear", "log", "linear"]
    for ax in axes:
        fractions = [sum(bar.get_height() for bar in bars) for bars in ax.containers]
        assert fractions == pytest.approx([1.0, 1.0]), ax.get_title()
    lo, hi = axes[1].get_xlim()
    assert lo < 6 and hi > 1e5


def test_transforms_are_what_they_claim():
    x = torch.randint(0, 256, (3, 2, 5, 7), generator=torch.Generator().manual_seed(0)) / 255
    assert torch.equal(apply_transforms(x, ("invert",)), 1 - x)
    a = x.numpy()
    for name, expected in (("hflip", a[..., :, ::-1]), ("vflip", a[..., ::-1, :])):
        flipped = apply_transforms(x, (name,))
        assert np.array_equal(flipped.numpy(), expected)
        assert torch.equal(apply_transforms(flipped, (name,)), x)
    # the top-left pixel after a left-right mirror is the top-right one, after upside down
    # the bottom-left one
    assert torch.equal(apply_transforms(x, ("hflip",))[..., 0, 0], x[..., 0, -1])
    assert torch.equal(apply_transforms(x, ("vflip",))[..., 0, 0], x[..., -1, 0])
    assert parse_other("digits:hflip:invert") == ("digits", ("hflip", "invert"))
    assert torch.equal(apply_transforms(x, ("hflip", "invert")), 1 - x.flip(-1))
    # inverted 8-bit levels k stay on the grid an image flow reads: 255 - k
    assert torch.equal(image_levels(apply_transforms(x, ("invert",))), 255 - image_levels(x))
    with pytest.raises(ValueError, match=r"act on images \(N, C, H, W\), got data of shape "
                                         r"\(5, 2\)"):
        apply_transforms(torch.rand(5, 2), ("hflip",))


@pytest.mark.parametrize(("overrides", "message"), [
    (["ood_data=[digits:negate]"],
     r"unknown transform 'negate'; choose from invert, hflip, vflip"),
    (["ood_data=[digits,uniform_noise,digits]"], "lists digits more than once"),
    (["ood_data=[digits,nonexistent:invert]"],
     r"task.other=nonexistent: no such data config; choose one of .*digits.*uniform_noise"),
    (["ood_data=[:invert]"], "names no dataset"),
    (["ood_data=[digits,uniform_noise]", "+task.other_data.split_seed=1"],
     r"uniform_noise's config has no option 'split_seed'; give it to one dataset as "
     r"\+task\.other_data\.<data>\.split_seed"),
    (["ood_data=[digits,uniform_noise]", "+task.other_data.npz.path=x.npz"],
     "task.other_data.npz sets options of npz, which task.other does not list"),
])
def test_bad_other_sets_are_refused_before_the_checkpoint_is_read(overrides, message,
                                                                   compose_cfg, tmp_path):
    cfg = compose_cfg([f"ckpt_path={tmp_path / 'absent.ckpt'}", "task=ood", *overrides],
                      config_name="eval", output_dir=tmp_path / "ood")
    with pytest.raises(ValueError, match=message):
        instantiate(cfg.task)(cfg)
