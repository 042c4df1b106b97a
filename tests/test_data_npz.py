"""data=npz: a user's own images, and a clear message for every kind of bad file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from nfvae.data import DataNotFoundError, NpzDataModule, NpzFormatError
from nfvae.training import train

RNG = np.random.default_rng(0)


def write(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def byte_images(n, h=6, w=5):
    return RNG.integers(0, 256, size=(n, h, w), dtype=np.uint8)


def test_grey_levels_are_scaled_and_valid_is_used(tmp_path):
    train_x, valid_x, test_x = byte_images(30), byte_images(10), byte_images(12)
    labels = RNG.integers(0, 3, size=30)
    path = write(tmp_path / "d.npz", train=train_x, valid=valid_x, test=test_x,
                 train_labels=labels)
    datamodule = NpzDataModule(path=path, binarize="none")
    assert datamodule.data_shape == (1, 6, 5)
    x, y = datamodule.split("train")
    torch.testing.assert_close(x, torch.from_numpy(train_x).float().unsqueeze(1) / 255)
    assert torch.equal(y, torch.from_numpy(labels))
    assert torch.equal(datamodule.split("val")[0].squeeze(1) * 255,
                       torch.from_numpy(valid_x).float())
    assert torch.equal(datamodule.split("test")[1], torch.zeros(12, dtype=torch.long))


def test_without_valid_a_seeded_part_of_train_is_held_out(tmp_path):
    flat = RNG.integers(0, 2, size=(40, 16)).astype(np.uint8)  # binary, 4x4 as flat rows
    path = write(tmp_path / "d.npz", train=flat, test=flat[:5])
    a = NpzDataModule(path=path, val_size=0.25, binarize="none")
    b = NpzDataModule(path=path, val_size=10, binarize="none")
    assert a.data_shape == (1, 4, 4)
    assert len(a.split("train")[0]) == 30 and len(a.split("val")[0]) == 10
    assert torch.equal(a.split("val")[0], b.split("val")[0])
    rows = {tuple(r) for r in flat.tolist()}
    assert {tuple(r) for r in a.split("val")[0].flatten(1).int().tolist()} <= rows


def test_column_major_images_are_read_upright(tmp_path):
    images = byte_images(8, h=4, w=3)  # (N, H, W)
    fortran_rows = np.stack([im.flatten(order="F") for im in images])  # (N, 12)
    path = write(tmp_path / "f.npz", train=fortran_rows, test=fortran_rows)
    datamodule = NpzDataModule(path=path, image_shape=[4, 3], column_major=True,
                               binarize="none")
    expected = torch.from_numpy(images).float().unsqueeze(1) / 255
    torch.testing.assert_close(datamodule.split("test")[0], expected)


@pytest.mark.parametrize("arrays, settings, message", [
    (dict(test=np.zeros((3, 4, 4))), {}, r"has no 'train' array \(it has: test\)"),
    (dict(train=np.zeros((3, 4, 4))), {}, r"has no 'test' array"),
    (dict(train=np.zeros((3, 2, 4, 4)), test=np.zeros((3, 4, 4))), {},
     r"'train' has shape \(3, 2, 4, 4\); images must be \(N, H, W\) or \(N, D\)"),
    (dict(train=np.zeros((3, 4, 4)), test=np.zeros((3, 5, 5))), {}, "image shapes differ"),
    (dict(train=np.full((3, 4, 4), np.nan), test=np.zeros((3, 4, 4))), {},
     "'train' contains 48 NaN"),
    (dict(train=np.full((3, 4, 4), 0.5), test=np.zeros((3, 4, 4))),
     {"value_range": "binary"}, r"value_range=binary declares binary values"),
    (dict(train=np.full((3, 4, 4), 300.0), test=np.zeros((3, 4, 4))), {},
     r"values in \[300.0, 300.0\], outside every pixel range data=npz reads"),
    (dict(train=np.full((3, 4, 4), 300.0), test=np.zeros((3, 4, 4))), {"value_range": "byte"},
     r"values in \[300.0, 300.0\] but data.value_range=byte declares"),
    (dict(train=np.full((3, 4, 4), -1.0), test=np.zeros((3, 4, 4))), {},
     r"values in \[-1.0, -1.0\]"),
    (dict(train=np.zeros((3, 4, 4)), test=np.full((3, 4, 4), 2.0)),
     {"value_range": "unit"}, r"'test' has values in \[2.0, 2.0\].*declares values in \[0, 1\]"),
    (dict(train=np.zeros((3, 10)), test=np.zeros((3, 10))), {}, "not square; set data.image_shape"),
    (dict(train=np.zeros((3, 16)), test=np.zeros((3, 16))), {"image_shape": [3, 5]},
     r"image_shape=\[3, 5\] has 15 pixels but each stored image has 16"),
    (dict(train=np.zeros((3, 16)), test=np.zeros((3, 16)), train_labels=np.zeros(4)), {},
     r"'train_labels' has shape \(4,\), expected \(3,\)"),
])
def test_bad_files_give_their_message(tmp_path, arrays, settings, message):
    path = write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(NpzFormatError, match=message):
        NpzDataModule(path=path, **settings).setup()


def test_missing_file_and_missing_path_are_reported(tmp_path):
    with pytest.raises(DataNotFoundError, match="no file at .*nope.npz"):
        NpzDataModule(path=str(tmp_path / "nope.npz")).setup()
    with pytest.raises(ValueError, match="data.path=/path/to/images.npz"):
        NpzDataModule(path=None)
    object_file = tmp_path / "objects.npz"
    np.savez(object_file, train=np.array([{"a": 1}], dtype=object), test=np.zeros((1, 4)))
    with pytest.raises(NpzFormatError, match="holds an array of Python objects") as info:
        NpzDataModule(path=str(object_file)).setup()
    assert "allow_pickle" not in str(info.value)  # no hint to load it unsafely
    text_file = tmp_path / "notes.npz"
    text_file.write_text("not an archive\n")
    with pytest.raises(NpzFormatError, match=r"notes\.npz is not an \.npz archive") as info:
        NpzDataModule(path=str(text_file)).setup()
    assert "pickle" not in str(info.value)


def test_npz_config_trains_one_step(tmp_path, compose_cfg):
    binary = (RNG.random((60, 8, 8)) < 0.3).astype(np.uint8)
    path = write(tmp_path / "mine.npz", train=binary[:40], valid=binary[40:50], test=binary[50:])
    cfg = compose_cfg(["data=npz", f"data.path={path}", "data.batch_size=20",
                       "trainer.fast_dev_run=true", "callbacks=none", "~logger"])
    datamodule = instantiate(cfg.data)
    assert datamodule.data_shape == (1, 8, 8)
    metrics = train(cfg)
    assert np.isfinite(metrics["train/loss"])
