"""A user's own images from an .npz file: ``data=npz data.path=FILE``.

The file holds ``train`` and ``test`` arrays and optionally ``valid`` (else a seeded
part of ``train`` is held out), each of shape (N, H, W) or (N, D); optional
``train_labels`` / ``valid_labels`` / ``test_labels`` hold integer labels. Pixels are
binary, in [0, 1], or grey levels 0..255 (``value_range``); 0..255 is divided by 255.
``column_major: true`` reads images stored column by column (Fortran order, as
MATLAB-exported files such as the IWAE Omniglot set are). Every problem with the file
is reported before training starts, naming the array and what is wrong with it.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from nfvae.data.base import TensorDataModule, seeded_split
from nfvae.data.mnist import DataNotFoundError
from nfvae.errors import UserError

VALUE_RANGES = ("auto", "binary", "unit", "byte")
SPLIT_KEYS = {"train": "train", "val": "valid", "test": "test"}


class NpzFormatError(UserError, ValueError):
    """The .npz file lacks an array or holds one of the wrong shape, dtype or values."""


def _check_values(name: str, array: np.ndarray, value_range: str, path: Path,
                  inferred: bool = False) -> None:
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            raise NpzFormatError(
                f"{path}: array '{name}' contains {int(np.isnan(array).sum())} NaN and "
                f"{int(np.isinf(array).sum())} infinite values; clean or drop those images")
    low, high = array.min(), array.max()
    if value_range == "binary":
        ok = bool(np.isin(array, (0, 1)).all())
        expected = "binary values {0, 1}"
    elif value_range == "unit":
        ok = low >= 0 and high <= 1
        expected = "values in [0, 1]"
    else:
        ok = low >= 0 and high <= 255
        expected = "grey levels in [0, 255]"
    if not ok and inferred:
        raise NpzFormatError(
            f"{path}: array '{name}' has values in [{low}, {high}], outside every pixel range "
            "data=npz reads (binary {0, 1}, [0, 1], or grey levels 0..255); rescale the file")
    if not ok:
        raise NpzFormatError(
            f"{path}: array '{name}' has values in [{low}, {high}] but data.value_range="
            f"{value_range} declares {expected}; set data.value_range (binary|unit|byte) "
            "to match the file, or rescale the file")


def infer_value_range(arrays: dict[str, np.ndarray]) -> str:
    """'binary' for bool or all-{0,1}, 'byte' when any value exceeds 1, else 'unit'."""
    if all(a.dtype == bool for a in arrays.values()):
        return "binary"
    if any(a.size and a.max() > 1 for a in arrays.values()):
        return "byte"
    if all(np.isin(a, (0, 1)).all() for a in arrays.values()):
        return "binary"
    return "unit"


class NpzDataModule(TensorDataModule):
    """Images from an .npz with ``train``, ``test`` and optionally ``valid`` arrays."""

    required_keys = ("train", "test")

    def __init__(self, path: str | None = None, image_shape: Sequence[int] | None = None,
                 column_major: bool = False, value_range: str = "auto",
                 val_size: float = 0.1, split_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if path is None:
            raise ValueError("data=npz needs a file: data.path=/path/to/images.npz")
        if value_range not in VALUE_RANGES:
            raise ValueError(f"data.value_range must be one of {VALUE_RANGES}, got {value_range!r}")
        if image_shape is not None and len(image_shape) not in (2, 3):
            raise ValueError(
                f"data.image_shape must be [H, W] or [C, H, W], got {list(image_shape)}")
        self.path = Path(path)
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        self.column_major = bool(column_major)
        self.value_range = value_range
        self.val_size = val_size
        self.split_seed = split_seed
        self._arrays: dict[str, np.ndarray] | None = None
        self._shape: tuple[int, int, int] | None = None

    # -- reading and checking the file --------------------------------------------------
    def missing_file_message(self) -> str:
        return (f"{type(self).__name__}: no file at {self.path.resolve()}; set data.path "
                "to where the .npz lies")

    def _read(self) -> dict[str, np.ndarray]:
        if self._arrays is not None:
            return self._arrays
        if not self.path.is_file():
            raise DataNotFoundError(self.missing_file_message())
        with self.path.open("rb") as file:
            is_zip = file.read(4) == b"PK\x03\x04"  # an .npz is a zip archive
        if not is_zip:
            raise NpzFormatError(
                f"{self.path} is not an .npz archive (no zip signature at its start); "
                "write the arrays with numpy.savez or numpy.savez_compressed")
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except ValueError as error:  # object arrays inside the archive
            raise NpzFormatError(
                f"{self.path} holds an array of Python objects, which data=npz does not "
                "read; store the images as numeric arrays (bool, integer or float)") from error
        except (OSError, EOFError, zipfile.BadZipFile) as error:
            raise NpzFormatError(f"{self.path} is a damaged .npz archive: {error}") from error
        for key in self.required_keys:
            if key not in arrays:
                raise NpzFormatError(
                    f"{self.path} has no '{key}' array (it has: {', '.join(sorted(arrays))}); "
                    "an .npz for data=npz needs 'train' and 'test', and optionally 'valid'")
        images = {k: arrays[k] for k in SPLIT_KEYS.values() if k in arrays}
        for key, array in images.items():
            if array.ndim not in (2, 3) or array.size == 0:
                raise NpzFormatError(
                    f"{self.path}: array '{key}' has shape {array.shape}; images must be "
                    "(N, H, W) or (N, D) with at least one image of at least one pixel")
            if array.dtype.kind not in "buif":
                raise NpzFormatError(f"{self.path}: array '{key}' has dtype {array.dtype}, "
                                     "expected bool, integer or float pixels")
        per_image = {key: array.shape[1:] for key, array in images.items()}
        if len(set(per_image.values())) > 1:
            raise NpzFormatError(f"{self.path}: the arrays' image shapes differ: {per_image}")
        value_range = self.value_range
        if value_range == "auto":
            value_range = infer_value_range(images)
        for key, array in images.items():
            _check_values(key, array, value_range, self.path, inferred=self.value_range == "auto")
        self._resolved_range = value_range
        self._shape = self._image_shape(next(iter(per_image.values())))
        for key in SPLIT_KEYS.values():
            labels = arrays.get(f"{key}_labels")
            if labels is not None and (labels.ndim != 1 or key not in images
                                       or len(labels) != len(images[key])):
                raise NpzFormatError(
                    f"{self.path}: '{key}_labels' has shape {labels.shape}, expected "
                    f"({len(images[key]) if key in images else 'N'},) to match '{key}'")
        self._arrays = arrays
        return arrays

    def _image_shape(self, stored: tuple[int, ...]) -> tuple[int, int, int]:
        size = math.prod(stored)
        if self.image_shape is not None:
            shape = self.image_shape if len(self.image_shape) == 3 else (1, *self.image_shape)
            if math.prod(shape) != size:
                raise NpzFormatError(
                    f"{self.path}: data.image_shape={list(self.image_shape)} has "
                    f"{math.prod(shape)} pixels but each stored image has {size} (shape {stored})")
            return shape  # type: ignore[return-value]
        if len(stored) == 2:  # (N, H, W): stored transposed when column-major
            return (1, stored[1], stored[0]) if self.column_major else (1, *stored)
        side = math.isqrt(size)
        if side * side != size:
            raise NpzFormatError(
                f"{self.path}: flat images of {size} pixels are not square; set "
                "data.image_shape=[H,W] (or [C,H,W])")
        return (1, side, side)

    @property
    def data_shape(self) -> tuple[int, int, int]:  # type: ignore[override]
        if self._shape is None:
            self._read()
        return self._shape  # type: ignore[return-value]

    # -- tensors -----------------------------------------------------------------------
    def _to_tensor(self, array: np.ndarray) -> Tensor:
        x = torch.from_numpy(np.ascontiguousarray(array)).reshape(len(array), -1).float()
        if self._resolved_range == "byte":
            x = x / 255.0
        c, h, w = self.data_shape
        if self.column_major:
            return x.view(-1, c, w, h).transpose(-1, -2).contiguous()
        return x.view(-1, c, h, w)

    def _labels(self, arrays: dict[str, np.ndarray], key: str, n: int) -> Tensor:
        labels = arrays.get(f"{key}_labels")
        if labels is None:
            return torch.zeros(n, dtype=torch.long)  # no labels: one class
        return torch.as_tensor(labels, dtype=torch.long)

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        arrays = self._read()
        splits = {}
        for split, key in SPLIT_KEYS.items():
            if key in arrays:
                x = self._to_tensor(arrays[key])
                splits[split] = (x, self._labels(arrays, key, len(x)))
        if "val" not in splits:
            x, y = splits.pop("train")
            n_val = int(self.val_size) if self.val_size >= 1 else round(self.val_size * len(x))
            if not 1 <= n_val < len(x):
                raise ValueError(f"data.val_size={self.val_size} leaves no train or no "
                                 f"validation images out of {len(x)}")
            parts = seeded_split(x, y, {"train": len(x) - n_val, "val": n_val}, self.split_seed)
            splits.update(parts)
        return splits
