"""scikit-learn's bundled 8x8 handwritten digits: 1797 real images, no download."""

from __future__ import annotations

import torch
from torch import Tensor

from nfvae.data.base import TensorDataModule, seeded_split


class DigitsDataModule(TensorDataModule):
    """``sklearn.datasets.load_digits`` scaled to [0, 1], split with a fixed seed.

    ``data_dir`` is accepted and unused: the images ship inside scikit-learn. Accepting
    it keeps ``data.data_dir`` one option for every dataset, so that a sweep such as
    ``-m data=digits,mnist data.data_dir=DIR`` composes.
    """

    data_shape = (1, 8, 8)

    def __init__(self, val_size: int = 180, test_size: int = 180, split_seed: int = 0,
                 data_dir: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.data_dir = data_dir
        self.val_size, self.test_size, self.split_seed = val_size, test_size, split_seed

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.as_tensor(digits.target, dtype=torch.long)
        train_size = len(x) - self.val_size - self.test_size
        sizes = {"train": train_size, "val": self.val_size, "test": self.test_size}
        return seeded_split(x, y, sizes, self.split_seed)
