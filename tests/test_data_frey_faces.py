"""Frey Faces: 1965 faces of 28x20 grey levels, a seeded 1565/200/200 split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from nfvae.data import DataNotFoundError, FreyFacesDataModule


@pytest.fixture
def npz_path(shared_file):
    return shared_file("frey_faces/freyfaces.npz")


def test_split_sizes_shape_range_and_coverage(npz_path, compose_cfg, data_dir):
    cfg = compose_cfg(["data=frey_faces", f"data.data_dir={data_dir}"])
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    assert datamodule.data_shape == (1, 28, 20)
    parts = [datamodule.split(name)[0] for name in ("train", "val", "test")]
    assert [len(x) for x in parts] == [1565, 200, 200]
    everything = torch.cat(parts)
    # continuous grey levels k/255, untouched by binarization
    levels = everything * 255
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    assert len(everything.unique()) > 100
    assert 8 / 255 - 1e-6 <= everything.min() and everything.max() <= 238 / 255 + 1e-6
    # the three parts are a permutation of the file's faces (upright 28x20)
    with np.load(npz_path) as stored:
        faces = torch.from_numpy(stored["data"]).float().view(-1, 1, 28, 20) / 255
    key = lambda x: sorted(map(tuple, x.flatten(1).mul(255).round().int().tolist()))  # noqa: E731
    assert key(everything) == key(faces)


def test_split_seed_decides_the_test_set(npz_path):
    tests = {}
    for seed in (123, 321, 123):
        datamodule = FreyFacesDataModule(path=str(npz_path), split_seed=seed)
        tests.setdefault(seed, []).append(datamodule.split("test")[0])
    assert torch.equal(tests[123][0], tests[123][1])
    assert not torch.equal(tests[123][0], tests[321][0])


def test_bad_sizes_and_missing_file_are_reported(tmp_path):
    with pytest.raises(ValueError, match="add up to it"):
        FreyFacesDataModule(path="x.npz", train_size=1500)
    with pytest.raises(DataNotFoundError, match="missing/freyfaces.npz"):
        FreyFacesDataModule(path=str(tmp_path / "missing" / "freyfaces.npz")).setup()
    with pytest.raises(DataNotFoundError, match="missing/frey_faces/freyfaces.npz") as error:
        FreyFacesDataModule(data_dir=str(tmp_path / "missing")).setup()
    assert "python -m nfvae.data.fetch frey_faces" in str(error.value)
