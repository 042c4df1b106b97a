"""Statically binarized MNIST (Larochelle & Murray 2011): the fixed 50k/10k/10k split.

The NADE/MADE/flow-VAE papers' benchmark: every pixel was sampled to 0/1 once, and
the same samples are used by everyone, so the data must never be binarized again.
The .npz holds ``train`` (50000, 784), ``valid`` (10000, 784) and ``test`` (10000, 784)
as uint8 in {0, 1}, row-major 28x28. No labels (all zeros here).
"""

from __future__ import annotations

from pathlib import Path

from nfvae.data.layout import BINARIZED_MNIST, not_found_hint
from nfvae.data.npz import NpzDataModule


class BinarizedMNISTDataModule(NpzDataModule):
    """The static split as it is on disk: ``binarize`` is always ``none``.

    Reads ``<data_dir>/binarized_mnist/binarized_mnist.npz``; ``path`` names the file
    itself instead (checkpoints written before ``data_dir`` recorded it that way).
    """

    required_keys = ("train", "valid", "test")

    def __init__(self, data_dir: str = "data", path: str | None = None,
                 binarize: str = "none", **kwargs):
        if binarize != "none":
            raise ValueError(
                f"binarized_mnist is already binarized (fixed 0/1 samples); data.binarize "
                f"must be none, got {binarize!r}. Use data=mnist for dynamic binarization.")
        self.data_dir = str(data_dir)
        path = path if path is not None else Path(data_dir) / BINARIZED_MNIST
        super().__init__(path=path, binarize="none", image_shape=(1, 28, 28),
                         column_major=False, value_range="binary", **kwargs)

    def missing_file_message(self) -> str:
        return (f"binarized MNIST not found at {self.path.resolve()}; "
                + not_found_hint("binarized_mnist", self.data_dir))
