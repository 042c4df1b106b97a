"""LightningDataModules; every dataset is preloaded as tensors and drawn by index."""

from nfvae.data.base import IndexBatchSampler, IndexedTensors, TensorDataModule, seeded_split
from nfvae.data.binarized_mnist import BinarizedMNISTDataModule
from nfvae.data.digits import DigitsDataModule
from nfvae.data.frey_faces import FreyFacesDataModule
from nfvae.data.mnist import DataNotFoundError, MNISTDataModule
from nfvae.data.npz import NpzDataModule, NpzFormatError
from nfvae.data.omniglot import OmniglotDataModule

__all__ = [
    "BinarizedMNISTDataModule",
    "DataNotFoundError",
    "DigitsDataModule",
    "FreyFacesDataModule",
    "IndexBatchSampler",
    "IndexedTensors",
    "MNISTDataModule",
    "NpzDataModule",
    "NpzFormatError",
    "OmniglotDataModule",
    "TensorDataModule",
    "seeded_split",
]
