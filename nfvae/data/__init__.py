"""LightningDataModules; every dataset is preloaded as tensors and drawn by index."""

from nfvae.data.base import IndexBatchSampler, IndexedTensors, TensorDataModule, seeded_split
from nfvae.data.digits import DigitsDataModule
from nfvae.data.mnist import DataNotFoundError, MNISTDataModule

__all__ = [
    "DataNotFoundError",
    "DigitsDataModule",
    "IndexBatchSampler",
    "IndexedTensors",
    "MNISTDataModule",
    "TensorDataModule",
    "seeded_split",
]
