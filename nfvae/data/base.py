"""In-memory datasets drawn by index, and the DataModule they share.

Every dataset is decoded once into a float tensor in [0, 1]; a batch is one
indexing operation (``x[idx]``) rather than a Python loop of per-item
transforms, which is where most data-loading time goes in small-model training.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader

BINARIZE_MODES = ("dynamic", "static", "none")


class IndexedTensors:
    """``dataset[idx_tensor] -> (x[idx], y[idx])``: one gather per batch."""

    def __init__(self, x: Tensor, y: Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        return self.x[idx], self.y[idx]


class IndexBatchSampler:
    """Yields index tensors of one batch each, sharded across distributed ranks.

    Each rank takes every ``world_size``-th index of a shared permutation, so
    the ranks' index sets are disjoint and together cover the epoch. The
    permutation depends on ``seed`` and the epoch (``set_epoch``, which
    Lightning calls), so runs are reproducible and every epoch is reshuffled.
    """

    def __init__(self, num_items: int, batch_size: int, shuffle: bool, seed: int = 0,
                 drop_last: bool = False):
        self.num_items, self.batch_size = num_items, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @staticmethod
    def _rank_and_world() -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def rank_indices(self) -> Tensor:
        rank, world = self._rank_and_world()
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_items, generator=generator)
        else:
            order = torch.arange(self.num_items)
        return order[rank::world]

    def __iter__(self) -> Iterator[Tensor]:
        indices = self.rank_indices()
        stop = len(indices) - (len(indices) % self.batch_size if self.drop_last else 0)
        for start in range(0, stop, self.batch_size):
            yield indices[start:start + self.batch_size]

    def __len__(self) -> int:
        _, world = self._rank_and_world()
        per_rank = -(-self.num_items // world)
        if self.drop_last:
            return per_rank // self.batch_size
        return -(-per_rank // self.batch_size)


class TensorDataModule(pl.LightningDataModule):
    """Base for every dataset: subclasses implement ``load_splits``.

    ``binarize``: ``dynamic`` draws a fresh Bernoulli(pixel) sample for every
    training batch, on the batch's device; validation and test sets are
    binarized once with a fixed seed so evaluation is deterministic and
    comparable across runs. ``static`` binarizes every split once. ``none``
    keeps the grey levels (for continuous likelihoods).
    """

    data_shape: tuple[int, ...]

    def __init__(self, batch_size: int = 100, eval_batch_size: int | None = None,
                 binarize: str = "dynamic", seed: int = 0):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ValueError(f"data.eval_batch_size must be >= 1, got {eval_batch_size}")
        if binarize not in BINARIZE_MODES:
            raise ValueError(f"data.binarize must be one of {BINARIZE_MODES}, got {binarize!r}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.binarize = binarize
        self.seed = seed
        self.splits: dict[str, tuple[Tensor, Tensor]] | None = None

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """{"train"|"val"|"test": (x float in [0, 1] (N, *data_shape), y long (N,))}."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        splits = self.load_splits()
        generator = torch.Generator().manual_seed(self.seed + 1)
        for name, (x, y) in splits.items():
            if tuple(x.shape[1:]) != tuple(self.data_shape):
                raise ValueError(f"{name} split has shape {tuple(x.shape)}, "
                                 f"expected (N, {', '.join(map(str, self.data_shape))})")
            fixed = self.binarize == "static" or (self.binarize == "dynamic" and name != "train")
            if fixed:
                splits[name] = (torch.bernoulli(x, generator=generator), y)
        self.splits = splits

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        self.setup()
        return self.splits[name]

    def _loader(self, name: str, batch_size: int, shuffle: bool) -> DataLoader:
        x, y = self.split(name)
        sampler = IndexBatchSampler(len(x), batch_size, shuffle=shuffle, seed=self.seed)
        # batch_size=None: the sampler already yields whole batches of indices.
        return DataLoader(IndexedTensors(x, y), sampler=sampler, batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        if self.binarize == "dynamic" and self.trainer is not None and self.trainer.training:
            x = torch.bernoulli(x)
        return x, y


def seeded_split(x: Tensor, y: Tensor, sizes: dict[str, int], seed: int
                 ) -> dict[str, tuple[Tensor, Tensor]]:
    """Shuffle with a fixed seed and cut into consecutive named parts of the given sizes."""
    if sum(sizes.values()) != len(x):
        raise ValueError(f"split sizes {sizes} do not add up to {len(x)} examples")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    parts, start = {}, 0
    for name, size in sizes.items():
        idx = order[start:start + size]
        parts[name] = (x[idx].contiguous(), y[idx].contiguous())
        start += size
    return parts
