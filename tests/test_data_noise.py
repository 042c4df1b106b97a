"""data=uniform_noise: seeded uniform noise on the 8-bit grid, no files, as shipped."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from nfvae.image_flow.data import image_levels


def noise(compose_cfg, *overrides):
    datamodule = instantiate(compose_cfg(["data=uniform_noise", *overrides]).data)
    datamodule.setup()
    return datamodule


def test_shipped_noise_is_mnist_shaped_grey_and_on_the_8_bit_grid(compose_cfg):
    datamodule = noise(compose_cfg)
    x, y = datamodule.split("test")
    assert datamodule.data_shape == (1, 28, 28) and x.shape == (10000, 1, 28, 28)
    assert datamodule.binarize == "none" and len(y) == 10000
    levels = x * 255
    assert torch.equal(levels, levels.round()), "every pixel is k/255"
    assert torch.equal(x, levels.round() / 255)
    assert torch.equal(image_levels(x), levels.round()), "an image flow reads k back"
    assert torch.equal(torch.unique(levels.round()), torch.arange(256.0)), "all 256 levels"
    # uniform over the grid: mean 1/2, variance (K^2 - 1) / (12 (K-1)^2) of k/(K-1)
    assert float(x.mean()) == pytest.approx(0.5, abs=2e-3)
    assert float(x.var()) == pytest.approx(257 / (12 * 255), rel=5e-3)
    assert len(datamodule.split("train")[0]) == 1000 and len(datamodule.split("val")[0]) == 1000


def test_noise_is_seeded_by_noise_seed_and_each_split_by_itself(compose_cfg):
    first = noise(compose_cfg).split("test")[0]
    assert torch.equal(first, noise(compose_cfg).split("test")[0])
    assert torch.equal(first, noise(compose_cfg, "seed=7").split("test")[0]), \
        "the run's seed leaves the noise alone"
    assert not torch.equal(first, noise(compose_cfg, "data.noise_seed=1").split("test")[0])
    # the test images do not depend on how many train or val images are drawn
    assert torch.equal(first, noise(compose_cfg, "data.train_size=5").split("test")[0])
    splits = noise(compose_cfg)
    assert not torch.equal(splits.split("train")[0][:5], splits.split("val")[0][:5])


def test_shape_and_levels_are_options(compose_cfg):
    datamodule = noise(compose_cfg, "data.shape=[3,8,6]", "data.num_levels=17",
                       "data.test_size=50")
    x = datamodule.split("test")[0]
    assert x.shape == (50, 3, 8, 6) and datamodule.data_shape == (3, 8, 6)
    assert torch.equal(x * 16, (x * 16).round()) and float(x.max()) == 1.0


@pytest.mark.parametrize(("override", "message"), [
    ("data.shape=[1,0,28]", r"data\.shape must be positive integers"),
    ("data.test_size=0", "split sizes must be >= 1"),
    ("data.num_levels=1", r"data\.num_levels must be an integer >= 2"),
    ("data.noise_seed=-1", r"data\.noise_seed must be an integer >= 0"),
])
def test_bad_settings_are_named(compose_cfg, override, message):
    # Hydra wraps the DataModule's ValueError, keeping its message
    with pytest.raises(InstantiationException, match=message):
        noise(compose_cfg, override)
