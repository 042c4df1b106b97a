"""Uniform noise images: a dataset that needs no files, for outlier detection.

Every pixel is an independent uniform draw from the ``num_levels`` grey levels
k / (num_levels - 1), k = 0..num_levels-1 (the default 256: the 8-bit grid k / 255,
so image flows, which model 8-bit images, score the levels exactly). Each split is
drawn from its own generator seeded by (noise_seed, split), so the test images stay
the same whatever the train and val sizes are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from nfvae.data.base import TensorDataModule

SPLITS = ("train", "val", "test")


class UniformNoiseDataModule(TensorDataModule):
    """Seeded uniform noise of ``shape`` ([C, H, W]; default one 28x28 channel).

    ``data_dir`` is accepted and unused, as for the digits, so that ``data.data_dir``
    stays an option of every dataset config.
    """

    def __init__(self, shape: Sequence[int] = (1, 28, 28), train_size: int = 1000,
                 val_size: int = 1000, test_size: int = 10000, num_levels: int = 256,
                 noise_seed: int = 0, data_dir: str | None = None, binarize: str = "none",
                 **kwargs):
        super().__init__(binarize=binarize, **kwargs)
        shape = tuple(shape)
        if not shape or not all(isinstance(s, int) and s >= 1 for s in shape):
            raise ValueError(f"data.shape must be positive integers such as [1, 28, 28], "
                             f"got {list(shape)}")
        sizes = {"train": train_size, "val": val_size, "test": test_size}
        if any(not isinstance(n, int) or n < 1 for n in sizes.values()):
            raise ValueError(f"uniform noise split sizes must be >= 1, got {sizes}")
        if not isinstance(num_levels, int) or num_levels < 2:
            raise ValueError(f"data.num_levels must be an integer >= 2, got {num_levels!r}")
        if not isinstance(noise_seed, int) or noise_seed < 0:
            raise ValueError(f"data.noise_seed must be an integer >= 0, got {noise_seed!r}")
        self.data_shape = shape
        self.sizes = sizes
        self.num_levels, self.noise_seed = num_levels, noise_seed
        self.data_dir = data_dir

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        splits = {}
        for number, name in enumerate(SPLITS):
            # One stream per (noise_seed, split), one-to-one for integer seeds.
            generator = torch.Generator().manual_seed(self.noise_seed * len(SPLITS) + number)
            levels = torch.randint(0, self.num_levels, (self.sizes[name], *self.data_shape),
                                   generator=generator)
            x = levels.float() / (self.num_levels - 1)
            splits[name] = (x, torch.zeros(len(x), dtype=torch.long))
        return splits
