"""Frey Faces (Brendan Frey): 1965 grayscale 28x20 video frames of one face.

The file has no split; the papers shuffle with a seed and cut 1565 train / 200
validation / 200 test (van den Berg et al. 2018 report means over the seeds 123, 321
and 231, so ``split_seed`` is part of the experiment). Pixels are grey levels 0..255,
scaled to k/255: continuous data, for a Gaussian or discretized-logistic likelihood.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from nfvae.data.base import TensorDataModule, seeded_split
from nfvae.data.layout import FREY_FACES, not_found_hint
from nfvae.data.mnist import DataNotFoundError

NUM_FACES = 1965


class FreyFacesDataModule(TensorDataModule):
    """``freyfaces.npz`` (key ``data``, (1965, 560) uint8) as (N, 1, 28, 20) in [0, 1].

    Reads ``<data_dir>/frey_faces/freyfaces.npz``; ``path`` names the file itself
    instead (checkpoints written before ``data_dir`` recorded it that way).
    """

    data_shape = (1, 28, 20)

    def __init__(self, data_dir: str = "data", path: str | None = None, train_size: int = 1565,
                 val_size: int = 200, test_size: int = 200, split_seed: int = 123,
                 binarize: str = "none", **kwargs):
        super().__init__(binarize=binarize, **kwargs)
        if train_size + val_size + test_size != NUM_FACES or min(train_size, val_size,
                                                                test_size) < 1:
            raise ValueError(f"Frey Faces has {NUM_FACES} images; train/val/test sizes "
                             f"{train_size}/{val_size}/{test_size} must be >= 1 and add up to it")
        self.data_dir = str(data_dir)
        self.path = Path(path) if path is not None else Path(data_dir) / FREY_FACES
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.split_seed = split_seed

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        if not self.path.is_file():
            raise DataNotFoundError(f"Frey Faces not found at {self.path.resolve()}; "
                                    + not_found_hint("frey_faces", self.data_dir))
        with np.load(self.path, allow_pickle=False) as archive:
            faces = archive["data"]
        if faces.shape != (NUM_FACES, 560):
            raise ValueError(f"{self.path}: expected 'data' of shape ({NUM_FACES}, 560), "
                             f"got {faces.shape}")
        x = torch.from_numpy(faces).float().div(255.0).view(-1, *self.data_shape)
        y = torch.zeros(len(x), dtype=torch.long)  # one person, no classes
        return seeded_split(x, y, self.sizes, self.split_seed)
