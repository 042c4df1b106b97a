"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015) at 28x28, as in the IWAE protocol.

The original 105x105 images of both alphabets sets (32,460 = 1,623 characters x 20
drawers) are inverted (the files store True for the white background), downsampled
with an antialiasing filter, and shuffled with a fixed seed into 24,345 train and
8,070 test images (Burda et al. 2016's sizes); 1,345 of the train images are held out
for validation (van den Berg et al. 2018), and the 45 left over are unused. The
pixels are grey levels from the downsampling; ``binarize: dynamic`` draws them
to 0/1 per batch. Labels are character indices (evaluation characters after the
964 background ones). Not byte-identical to the IWAE ``chardata.mat``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nfvae.data.base import TensorDataModule, seeded_split
from nfvae.data.layout import OMNIGLOT, OMNIGLOT_FILES, not_found_hint
from nfvae.data.mnist import DataNotFoundError

FILES = OMNIGLOT_FILES
TOTAL_IMAGES = 32460


@functools.lru_cache(maxsize=2)
def load_downsampled(folder: str, image_size: int) -> tuple[Tensor, Tensor]:
    """All Omniglot images of ``folder`` (which holds ``FILES``), stroke = 1, as
    (N, 1, size, size) floats; cached per process because decoding and resizing 32k
    images costs seconds."""
    images, labels, offset = [], [], 0
    for name in FILES:
        path = Path(folder) / name
        if not path.is_file():
            raise DataNotFoundError(f"Omniglot not found: no {path.resolve()}")
        with np.load(path, allow_pickle=False) as archive:
            strokes = ~archive["images"]  # True = background in the files
            chars = archive["labels"]
        flat = torch.from_numpy(strokes.reshape(-1, 1, *strokes.shape[-2:]))
        for start in range(0, len(flat), 2048):  # float copies of 2048 images at a time
            chunk = flat[start:start + 2048].float()
            images.append(F.interpolate(chunk, size=(image_size, image_size), mode="bilinear",
                                        antialias=True, align_corners=False).clamp_(0, 1))
        labels.append(torch.from_numpy(chars.reshape(-1)).long() + offset)
        offset += int(chars.max()) + 1
    return torch.cat(images), torch.cat(labels)


class OmniglotDataModule(TensorDataModule):
    """Seeded IWAE-sized split of all 32,460 Omniglot images, downsampled to 28x28.

    Reads ``<data_dir>/omniglot/images_{background,evaluation}.npz``.
    """

    def __init__(self, data_dir: str = "data", image_size: int = 28,
                 train_size: int = 24345, test_size: int = 8070, val_size: int = 1345,
                 split_seed: int = 0, binarize: str = "dynamic", **kwargs):
        super().__init__(binarize=binarize, **kwargs)
        if image_size < 4:
            raise ValueError(f"data.image_size must be >= 4, got {image_size}")
        if not 1 <= val_size < train_size or test_size < 1 or train_size + test_size > TOTAL_IMAGES:
            raise ValueError(
                f"Omniglot split sizes train={train_size} (val={val_size} of it), "
                f"test={test_size} must be positive and fit in {TOTAL_IMAGES} images")
        self.data_dir = str(data_dir)
        self.data_shape = (1, image_size, image_size)
        self.sizes = {"train": train_size - val_size, "val": val_size, "test": test_size,
                      "unused": TOTAL_IMAGES - train_size - test_size}
        self.split_seed = split_seed

    def folder(self) -> Path:
        folder = Path(self.data_dir) / OMNIGLOT
        # Checkpoints written before data_dir meant the data root recorded the omniglot
        # folder itself; they still evaluate.
        if not (folder / FILES[0]).is_file() and (Path(self.data_dir) / FILES[0]).is_file():
            return Path(self.data_dir)
        return folder

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        folder = self.folder()
        try:
            x, y = load_downsampled(str(folder), self.data_shape[-1])
        except DataNotFoundError as error:
            raise DataNotFoundError(f"{error}; {not_found_hint('omniglot', self.data_dir)}"
                                    ) from None
        if len(x) != TOTAL_IMAGES:
            raise ValueError(f"expected {TOTAL_IMAGES} Omniglot images in {folder}, "
                             f"found {len(x)}")
        splits = seeded_split(x, y, self.sizes, self.split_seed)
        splits.pop("unused")
        return splits
