"""Omniglot at 28x28: inverted, antialiased, seeded IWAE-sized split, dynamic binarization."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from nfvae.data import DataNotFoundError, OmniglotDataModule


@pytest.fixture
def omniglot_dir(shared_file):
    """The data folder (the root that holds omniglot/), once the files are there."""
    return shared_file("omniglot/images_background.npz").parent.parent


def test_split_sizes_shapes_and_binarization(omniglot_dir, compose_cfg):
    cfg = compose_cfg(["data=omniglot", f"data.data_dir={omniglot_dir}"])
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    assert datamodule.data_shape == (1, 28, 28)
    (x_train, y_train), (x_val, _), (x_test, _) = (datamodule.split(n)
                                                   for n in ("train", "val", "test"))
    assert (len(x_train), len(x_val), len(x_test)) == (24345 - 1345, 1345, 8070)
    assert x_train.shape[1:] == (1, 28, 28)
    # train keeps the antialiased grey levels (binarized per batch); val/test are fixed 0/1
    assert 0 <= x_train.min() and x_train.max() <= 1
    assert ((x_train > 0.05) & (x_train < 0.95)).float().mean() > 0.01
    assert set(x_val.unique().tolist()) == {0.0, 1.0} == set(x_test.unique().tolist())
    # inverted: strokes are 1 and cover a small part of each image
    assert 0.02 < x_train.mean() < 0.3
    # characters of both the background (0..963) and evaluation (964..) sets
    assert y_train.min() == 0 and y_train.max() > 964


def test_split_is_seeded_and_image_size_is_a_setting(omniglot_dir):
    a = OmniglotDataModule(data_dir=str(omniglot_dir), binarize="none").split("test")[0]
    b = OmniglotDataModule(data_dir=str(omniglot_dir), binarize="none").split("test")[0]
    c = OmniglotDataModule(data_dir=str(omniglot_dir), binarize="none",
                           split_seed=1).split("test")[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    small = OmniglotDataModule(data_dir=str(omniglot_dir), image_size=14, train_size=300,
                               val_size=100, test_size=100)
    assert small.split("val")[0].shape == (100, 1, 14, 14)


def test_missing_folder_names_the_path_and_the_fetch_command(tmp_path):
    with pytest.raises(DataNotFoundError, match="empty/omniglot/images_background.npz") as error:
        OmniglotDataModule(data_dir=str(tmp_path / "empty")).setup()
    assert f"python -m nfvae.data.fetch omniglot --data-dir {tmp_path / 'empty'}" in str(
        error.value)


def test_a_recorded_omniglot_folder_still_reads(omniglot_dir):
    """Checkpoints from before data_dir meant the data root recorded the omniglot folder
    itself as data_dir; evaluating them must still find the files."""
    old = OmniglotDataModule(data_dir=str(omniglot_dir / "omniglot"), binarize="none")
    new = OmniglotDataModule(data_dir=str(omniglot_dir), binarize="none")
    assert torch.equal(old.split("val")[0], new.split("val")[0])
