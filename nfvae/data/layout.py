"""Where each dataset lies under ``data.data_dir``.

The one layout that the loaders read and ``python -m nfvae.data.fetch`` writes; it is
also the layout of the project's shared data folder, so a copy of that folder and a
fresh fetch are interchangeable.
"""

from __future__ import annotations

from pathlib import Path

MNIST_RAW = "MNIST/raw"  # torchvision's own layout: MNIST(root=data_dir) reads it
BINARIZED_MNIST = "binarized_mnist/binarized_mnist.npz"
FREY_FACES = "frey_faces/freyfaces.npz"
OMNIGLOT = "omniglot"  # holds images_background.npz and images_evaluation.npz
OMNIGLOT_FILES = ("images_background.npz", "images_evaluation.npz")

# The relative path each dataset is checked by, for messages and skips.
MARKERS = {"mnist": MNIST_RAW, "binarized_mnist": BINARIZED_MNIST,
           "omniglot": f"{OMNIGLOT}/{OMNIGLOT_FILES[0]}", "frey_faces": FREY_FACES}


def fetch_command(name: str, data_dir: str | Path) -> str:
    """The command that downloads and converts ``name`` ("all" for every dataset)."""
    return f"python -m nfvae.data.fetch {name} --data-dir {data_dir}"


def not_found_hint(name: str, data_dir: str | Path) -> str:
    """The two ways out of a missing dataset, for every loader's error message."""
    return (f"get it with `{fetch_command(name, data_dir)}` (needs internet), or set "
            f"data.data_dir to the folder that holds {MARKERS[name]}")
