"""DataModules of the 2-D experiments.

* ``TargetSamplesDataModule``: fixed train/val/test samples of a ``SampleTarget``
  (maximum likelihood); labels name the component each point came from.
* ``BaseNoiseDataModule``: reverse-KL training has no data, only draws of the
  base N(0, I) that the flow pushes towards an energy. Training batches are
  fresh draws (``steps_per_epoch`` of them per epoch, from the global RNG that
  ``seed_everything`` seeds); validation and test use fixed draws, so their
  losses are comparable across epochs. Labels are zeros.

Both yield ``(x, y)`` batches and expose ``data_shape`` and ``split(name)``
like the image DataModules, so ``nfvae.training.train`` runs them unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from nfvae.data.base import TensorDataModule
from nfvae.toy.targets import SampleTarget, Target

_SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}


def _check_sizes(**sizes: int) -> None:
    for name, size in sizes.items():
        if size < 1:
            raise ValueError(f"data.{name} must be >= 1, got {size}")


class TargetSamplesDataModule(TensorDataModule):
    """``num_train``/``num_val``/``num_test`` samples of ``target``, drawn once with fixed seeds."""

    def __init__(self, target: Target, num_train: int = 20000, num_val: int = 2000,
                 num_test: int = 5000, batch_size: int = 256,
                 eval_batch_size: int | None = 2500, seed: int = 0):
        if not isinstance(target, SampleTarget):
            raise TypeError(f"{type(target).__name__} cannot be sampled; energies are learned "
                            f"by reverse KL (data=toy_noise, module=toy_reverse_kl)")
        _check_sizes(num_train=num_train, num_val=num_val, num_test=num_test)
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size,
                         binarize="none", seed=seed)
        self.target = target
        self.data_shape = (target.dim,)
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        splits = {}
        for name, size in self.sizes.items():
            generator = torch.Generator().manual_seed(1000 * self.seed + _SPLIT_OFFSETS[name])
            splits[name] = self.target.sample(size, generator)
        return splits


class _FreshNoise(Dataset):
    """``len`` batches, each a fresh N(0, I) draw (B, D) with zero labels."""

    def __init__(self, num_batches: int, batch_size: int, dim: int):
        self.num_batches, self.batch_size, self.dim = num_batches, batch_size, dim

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return (torch.randn(self.batch_size, self.dim),
                torch.zeros(self.batch_size, dtype=torch.long))


class BaseNoiseDataModule(TensorDataModule):
    """Draws of the base N(0, I) in the target's dimension, for reverse-KL training."""

    def __init__(self, target: Target, steps_per_epoch: int = 100, batch_size: int = 256,
                 num_val: int = 4096, num_test: int = 16384,
                 eval_batch_size: int | None = 4096, seed: int = 0):
        _check_sizes(steps_per_epoch=steps_per_epoch, num_val=num_val, num_test=num_test)
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size,
                         binarize="none", seed=seed)
        self.target = target
        self.data_shape = (target.dim,)
        self.steps_per_epoch = steps_per_epoch
        self.sizes = {"val": num_val, "test": num_test}

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        splits = {}
        for name, size in self.sizes.items():
            generator = torch.Generator().manual_seed(1000 * self.seed + _SPLIT_OFFSETS[name])
            z0 = torch.randn(size, self.target.dim, generator=generator)
            splits[name] = (z0, torch.zeros(size, dtype=torch.long))
        return splits

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        if name == "train":
            raise ValueError("reverse-KL training draws fresh noise; there is no fixed train split")
        return super().split(name)

    def train_dataloader(self) -> DataLoader:
        noise = _FreshNoise(self.steps_per_epoch, self.batch_size, self.target.dim)
        return DataLoader(noise, batch_size=None, shuffle=False)
