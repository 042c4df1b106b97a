"""data.data_dir is the one data option of every dataset config, read in one layout."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from nfvae.data import DataNotFoundError
from nfvae.data.layout import MARKERS

# Every dataset config that reads files, with the split sizes of its shipped defaults.
SIZES = {"mnist": (55000, 5000, 10000), "binarized_mnist": (50000, 10000, 10000),
         "omniglot": (23000, 1345, 8070), "frey_faces": (1565, 200, 200)}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_each_dataset_loads_from_data_dir(name, data_dir, shared_file, compose_cfg):
    shared_file(MARKERS[name])
    datamodule = instantiate(compose_cfg([f"data={name}", f"data.data_dir={data_dir}"]).data)
    datamodule.setup()
    assert tuple(len(datamodule.split(s)[0]) for s in ("train", "val", "test")) == SIZES[name]


@pytest.mark.parametrize("name", sorted(SIZES))
def test_a_data_dir_without_the_dataset_names_the_file_and_the_fetch_command(
        name, compose_cfg, tmp_path):
    overrides = [f"data={name}", f"data.data_dir={tmp_path}"]
    if name == "mnist":
        overrides.append("data.download=false")  # no network here; the message is the point
    datamodule = instantiate(compose_cfg(overrides).data)
    with pytest.raises(DataNotFoundError) as error:
        datamodule.setup()
    assert str(tmp_path / MARKERS[name]) in str(error.value)
    assert f"python -m nfvae.data.fetch {name} --data-dir {tmp_path}" in str(error.value)


def test_digits_accepts_data_dir_and_needs_no_files(compose_cfg, tmp_path):
    """The digits ship with scikit-learn: data.data_dir composes (a sweep over data=
    with one data_dir must not fail on digits) and reads nothing from it."""
    cfg = compose_cfg(["data=digits", f"data.data_dir={tmp_path / 'nothing'}"])
    assert cfg.data.data_dir == str(tmp_path / "nothing")
    assert len(instantiate(cfg.data).split("val")[0]) == cfg.data.val_size


def test_data_dir_defaults_to_nfvae_data_dir(compose_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("NFVAE_DATA_DIR", str(tmp_path))
    for name in (*SIZES, "digits"):
        assert compose_cfg([f"data={name}"]).data.data_dir == str(tmp_path)
    monkeypatch.delenv("NFVAE_DATA_DIR")
    assert compose_cfg(["data=mnist"]).data.data_dir == "data"
