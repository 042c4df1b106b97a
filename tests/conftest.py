"""Shared fixtures: the real conf/, the shared benchmark data, quiet Lightning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import nfvae.config  # noqa: F401  (registers the ${nfvae.*} resolvers conf/ uses)
from nfvae.data.layout import MARKERS, fetch_command

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


def shared_data_dir() -> Path:
    """The benchmark data folder: $NFVAE_DATA_DIR, else ./data of the checkout, the
    same default as training's data.data_dir and `python -m nfvae.data.fetch`."""
    return Path(os.environ.get("NFVAE_DATA_DIR", ROOT / "data")).resolve()


def skip_missing(name: str, missing: Path) -> None:
    """Skip, naming the command that fetches dataset ``name`` ("all": every one)."""
    pytest.skip(f"benchmark data not found at {missing}: run "
                f"`{fetch_command(name, shared_data_dir())}` on a machine with internet, "
                "or set NFVAE_DATA_DIR to a folder that holds it")


@pytest.fixture
def data_dir() -> Path:
    path = shared_data_dir()
    if not (path / MARKERS["mnist"]).is_dir():
        skip_missing("all", path)
    return path


@pytest.fixture
def shared_file(data_dir):
    """shared_file("a/b.npz") -> that file (or folder) under the data folder, or skip."""

    def _shared_file(relative: str) -> Path:
        path = data_dir / relative
        if not path.exists():
            name = next((n for n, marker in MARKERS.items()
                         if marker.split("/")[0] == relative.split("/")[0]), "all")
            skip_missing(name, path)
        return path

    return _shared_file


@pytest.fixture
def compose_cfg(tmp_path):
    """compose(overrides) -> the real train.yaml (or another config) with a tmp run folder."""
    from hydra import compose, initialize_config_dir

    def _compose(overrides=(), config_name="train", output_dir=None):
        out = output_dir or tmp_path / "run"
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=config_name,
                           overrides=[f"paths.output_dir={out}", *overrides])

    return _compose


@pytest.fixture(autouse=True)
def _restore_lightning_rank():
    """A Trainer built for a faked cluster rank (tests/test_launch.py) sets Lightning's
    process-wide ``rank_zero_only.rank``; later Trainers in this process would then
    think they are not rank 0 and write no event files. Put it back after each test."""
    from lightning_utilities.core.rank_zero import rank_zero_only

    rank = getattr(rank_zero_only, "rank", 0)
    yield
    rank_zero_only.rank = rank


@pytest.fixture(autouse=True, scope="session")
def _classifier_cache(tmp_path_factory):
    """The diagnosis caches its sample classifier under NFVAE_CACHE_DIR (else the user's
    ~/.cache): tests keep it in their own folder, shared by the session."""
    if "NFVAE_CACHE_DIR" in os.environ:
        yield
        return
    os.environ["NFVAE_CACHE_DIR"] = str(tmp_path_factory.mktemp("nfvae_cache"))
    yield
    del os.environ["NFVAE_CACHE_DIR"]
