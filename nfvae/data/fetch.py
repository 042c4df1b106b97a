"""Download the benchmark datasets and convert them into the layout the loaders read.

    python -m nfvae.data.fetch all --data-dir data
    python -m nfvae.data.fetch binarized_mnist frey_faces --data-dir /big/disk/data

Needs internet. Sources: torchvision for MNIST and Omniglot; Larochelle & Murray's
``binarized_mnist_{train,valid,test}.amat`` for statically binarized MNIST; Roweis'
``frey_rawface.mat`` for Frey Faces. The files land in ``nfvae.data.layout``'s layout
(that of the project's shared data folder), and each dataset is then loaded once by
its DataModule, so a finished fetch is a working one.

Downloading and converting are kept apart: the ``convert_*`` functions are pure
functions of local files (tested offline). A downloaded file already in place is not
fetched again, so on a machine without internet, copy the downloads into place (the
paths are printed on failure) and run the same command to convert them.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import urllib.error
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nfvae.data.layout import BINARIZED_MNIST, FREY_FACES, OMNIGLOT, OMNIGLOT_FILES

DATASETS = ("mnist", "binarized_mnist", "omniglot", "frey_faces")

BINARIZED_MNIST_URL = ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
                       "binarized_mnist_{split}.amat")
BINARIZED_MNIST_SPLITS = ("train", "valid", "test")
FREY_FACES_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
MNIST_PIXELS = 28 * 28
FREY_PIXELS = 28 * 20
OMNIGLOT_DRAWERS = 20
# torchvision's Omniglot file names: <character id, 4 digits>_<drawer, 2 digits>.png
OMNIGLOT_NAME = re.compile(r"^(\d{4})_(\d{2})\.png$")


class ConversionError(ValueError):
    """A downloaded file is not what the converter expects."""


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    """Write a compressed .npz through a temporary name, so that an interrupted
    conversion never leaves a half-written file that the loaders would try to read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as file:
        np.savez_compressed(file, **arrays)
    os.replace(partial, path)
    return path


# -- conversion: local files in, the loaders' files out ------------------------------------
def read_amat(path: Path) -> np.ndarray:
    """One ``binarized_mnist_*.amat``: a text row of 784 space-separated 0/1 per image."""
    try:
        rows = np.loadtxt(path, dtype=np.uint8, ndmin=2)
    except ValueError as error:
        raise ConversionError(f"{path}: not a text file of 0/1 pixel rows ({error})") from None
    if rows.shape[1] != MNIST_PIXELS or not np.isin(rows, (0, 1)).all():
        raise ConversionError(f"{path}: expected rows of {MNIST_PIXELS} values in {{0, 1}}, "
                              f"got shape {rows.shape} with values {np.unique(rows)[:5]}")
    return rows


def convert_binarized_mnist(amat_dir: Path, out: Path) -> Path:
    """``binarized_mnist_{train,valid,test}.amat`` -> an .npz of uint8 (N, 784) arrays
    ``train``, ``valid`` and ``test`` (row-major 28x28, as the .amat rows are)."""
    arrays = {split: read_amat(Path(amat_dir) / f"binarized_mnist_{split}.amat")
              for split in BINARIZED_MNIST_SPLITS}
    return save_npz(out, **arrays)


def convert_frey_faces(mat_path: Path, out: Path) -> Path:
    """``frey_rawface.mat`` (MATLAB, ``ff`` of shape (560, N) uint8, one face per
    column) -> an .npz with ``data`` (N, 560) uint8; ``reshape(-1, 28, 20)`` gives
    upright faces."""
    from scipy.io import loadmat

    try:
        ff = loadmat(mat_path)["ff"]
    except (ValueError, KeyError, OSError) as error:
        raise ConversionError(f"{mat_path}: not a MATLAB file with an 'ff' array ({error!r})"
                              ) from None
    if ff.ndim != 2 or ff.shape[0] != FREY_PIXELS:
        raise ConversionError(f"{mat_path}: 'ff' has shape {ff.shape}, expected "
                              f"({FREY_PIXELS}, N): one 28x20 face per column")
    return save_npz(out, data=np.ascontiguousarray(ff.T.astype(np.uint8)))


def convert_omniglot(images_dir: Path, out: Path) -> Path:
    """torchvision's ``images_background`` (or ``images_evaluation``) folder,
    ``<alphabet>/<character>/<id>_<drawer>.png``, -> an .npz with ``images``
    (characters, 20, H, W) bool, True where the PNG is white (the background), and
    ``labels`` (characters, 20) int64, the character's index in the set.

    Characters are ordered by the id in the file names and drawers by their number,
    not by directory listing (whose order depends on the file system); this is the
    order of the shared data folder's copy.
    """
    from PIL import Image

    found: dict[tuple[int, int], Path] = {}
    for path in sorted(Path(images_dir).rglob("*.png")):
        match = OMNIGLOT_NAME.match(path.name)
        if match is None:
            raise ConversionError(f"{path}: not an Omniglot file name (<id>_<drawer>.png)")
        found[int(match[1]), int(match[2])] = path
    if not found:
        raise ConversionError(f"{images_dir}: no Omniglot .png files")
    ids = sorted({char for char, _ in found})
    if ids != list(range(ids[0], ids[0] + len(ids))):
        raise ConversionError(f"{images_dir}: character ids {ids[0]}..{ids[-1]} have gaps")
    missing = [f"{char:04d}_{drawer:02d}.png" for char in ids
               for drawer in range(1, OMNIGLOT_DRAWERS + 1) if (char, drawer) not in found]
    if missing or len(found) != len(ids) * OMNIGLOT_DRAWERS:
        raise ConversionError(f"{images_dir}: every character needs drawers 01..20; "
                              f"missing {missing[:3]} ({len(missing)} in all)")
    first = np.asarray(Image.open(found[ids[0], 1]).convert("L"))
    images = np.empty((len(ids), OMNIGLOT_DRAWERS, *first.shape), dtype=bool)
    for (char, drawer), path in found.items():
        pixels = np.asarray(Image.open(path).convert("L"))
        if pixels.shape != first.shape:
            raise ConversionError(f"{path}: {pixels.shape} pixels, the others {first.shape}")
        images[char - ids[0], drawer - 1] = pixels > 127
    labels = np.repeat(np.arange(len(ids), dtype=np.int64)[:, None], OMNIGLOT_DRAWERS, axis=1)
    return save_npz(out, images=images, labels=labels)


# -- fetching: download into the data folder, convert, load once -----------------------
def download(url: str, folder: Path, filename: str) -> Path:
    """``folder/filename`` from ``url`` unless it is there already."""
    from torchvision.datasets.utils import download_url

    path = folder / filename
    if not path.is_file():
        try:
            download_url(url, str(folder), filename)
        except (urllib.error.URLError, OSError, RuntimeError) as error:
            raise SystemExit(f"fetch: could not download {url} ({error}). Without internet, "
                             f"download it elsewhere, copy it to {path}, and run this "
                             "command again to convert it.") from None
    return path


def fetch_mnist(data_dir: Path) -> None:
    from torchvision.datasets import MNIST

    for train in (True, False):  # torchvision writes its own layout, MNIST/raw/*-ubyte
        MNIST(root=str(data_dir), train=train, download=True)


def fetch_binarized_mnist(data_dir: Path) -> None:
    out = data_dir / BINARIZED_MNIST
    for split in BINARIZED_MNIST_SPLITS:
        download(BINARIZED_MNIST_URL.format(split=split), out.parent,
                 f"binarized_mnist_{split}.amat")
    convert_binarized_mnist(out.parent, out)


def fetch_frey_faces(data_dir: Path) -> None:
    out = data_dir / FREY_FACES
    convert_frey_faces(download(FREY_FACES_URL, out.parent, "frey_rawface.mat"), out)


def fetch_omniglot(data_dir: Path) -> None:
    from torchvision.datasets import Omniglot

    folder = data_dir / OMNIGLOT
    for background, name in zip((True, False), OMNIGLOT_FILES, strict=True):
        dataset = Omniglot(root=str(folder), background=background, download=True)
        convert_omniglot(Path(dataset.target_folder), folder / name)


FETCHERS: dict[str, Callable[[Path], None]] = {
    "mnist": fetch_mnist, "binarized_mnist": fetch_binarized_mnist,
    "omniglot": fetch_omniglot, "frey_faces": fetch_frey_faces}


def load_once(name: str, data_dir: Path) -> dict[str, int]:
    """Load ``name`` with its DataModule as training would; {split: number of images}."""
    from nfvae import data

    modules = {"mnist": lambda: data.MNISTDataModule(download=False, **kwargs),
               "binarized_mnist": lambda: data.BinarizedMNISTDataModule(**kwargs),
               "omniglot": lambda: data.OmniglotDataModule(**kwargs),
               "frey_faces": lambda: data.FreyFacesDataModule(**kwargs)}
    kwargs = {"data_dir": str(data_dir), "binarize": "none"}  # the check draws nothing
    module = modules[name]()
    module.setup()
    return {split: len(x) for split, (x, _) in module.splits.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nfvae.data.fetch", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", choices=(*DATASETS, "all"), metavar="NAME",
                        help=f"one or more of {', '.join(DATASETS)}, or all")
    parser.add_argument("--data-dir", default=os.environ.get("NFVAE_DATA_DIR", "data"),
                        help="where to write; training reads data.data_dir, whose default "
                             "is the same: $NFVAE_DATA_DIR, else ./data (default: %(default)s)")
    args = parser.parse_args(argv)
    names = DATASETS if "all" in args.names else tuple(dict.fromkeys(args.names))
    data_dir = Path(args.data_dir)
    for name in names:
        print(f"fetch: {name} into {data_dir.resolve()}", flush=True)
        try:
            FETCHERS[name](data_dir)
        except (ConversionError, RuntimeError) as error:  # torchvision's download failures
            raise SystemExit(f"fetch: {name}: {error}") from None
        sizes = ", ".join(f"{split} {n}" for split, n in load_once(name, data_dir).items())
        print(f"fetch: {name} ready ({sizes})", flush=True)
    if data_dir.resolve() != Path(os.environ.get("NFVAE_DATA_DIR", "data")).resolve():
        print(f"fetch: train with data.data_dir={data_dir} (or export NFVAE_DATA_DIR="
              f"{data_dir.resolve()}, which the tests read too)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
