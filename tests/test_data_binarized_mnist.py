"""Static binarized MNIST: the fixed 50k/10k/10k split, loaded as stored, never re-binarized."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from nfvae.data import BinarizedMNISTDataModule, DataNotFoundError


@pytest.fixture
def npz_path(shared_file):
    return shared_file("binarized_mnist/binarized_mnist.npz")


def test_splits_shapes_and_values_equal_the_file(npz_path, compose_cfg, data_dir):
    cfg = compose_cfg(["data=binarized_mnist", f"data.data_dir={data_dir}"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert datamodule.data_shape == (1, 28, 28)
    with np.load(npz_path) as stored:
        for split, key, n in [("train", "train", 50000), ("val", "valid", 10000),
                              ("test", "test", 10000)]:
            x, y = datamodule.split(split)
            assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (n,)
            # exactly the stored 0/1 samples, in the stored order: not re-binarized
            assert torch.equal(x.view(n, -1), torch.from_numpy(stored[key]).float())


def test_training_batches_are_not_binarized_again(npz_path):
    datamodule = BinarizedMNISTDataModule(path=str(npz_path), batch_size=50)
    batch = next(iter(datamodule.train_dataloader()))
    x_again = datamodule.on_after_batch_transfer(batch, 0)[0]
    assert torch.equal(x_again, batch[0])
    assert set(batch[0].unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_asking_to_binarize_again_is_refused(mode):
    with pytest.raises(ValueError, match="already binarized"):
        BinarizedMNISTDataModule(path="unused.npz", binarize=mode)


def test_missing_file_names_the_path(tmp_path):
    datamodule = BinarizedMNISTDataModule(path=str(tmp_path / "nowhere" / "bm.npz"))
    with pytest.raises(DataNotFoundError, match="nowhere/bm.npz"):
        datamodule.setup()
    datamodule = BinarizedMNISTDataModule(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError,
                       match="nowhere/binarized_mnist/binarized_mnist.npz") as error:
        datamodule.setup()
    assert "python -m nfvae.data.fetch binarized_mnist" in str(error.value)
