"""Statically binarized MNIST (Larochelle & Murray 2011): the fixed 50k/10k/10k split.

The NADE/MADE/flow-VAE papers' benchmark: every pixel was sampled to 0/1 once, and
the same samples are used by everyone, so the data must never be binarized again.
The .npz holds ``train`` (50000, 784), ``valid`` (10000, 784) and ``test`` (10000, 784)
as uint8 in {0, 1}, row-major 28x28. No labels (all zeros here).
"""

from __future__ import annotations

from nfvae.data.npz import NpzDataModule


class BinarizedMNISTDataModule(NpzDataModule):
    """The static split as it is on disk: ``binarize`` is always ``none``."""

    required_keys = ("train", "valid", "test")

    def __init__(self, path: str = "data/binarized_mnist/binarized_mnist.npz",
                 binarize: str = "none", **kwargs):
        if binarize != "none":
            raise ValueError(
                f"binarized_mnist is already binarized (fixed 0/1 samples); data.binarize "
                f"must be none, got {binarize!r}. Use data=mnist for dynamic binarization.")
        super().__init__(path=path, binarize="none", image_shape=(1, 28, 28),
                         column_major=False, value_range="binary", **kwargs)
