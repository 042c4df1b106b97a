"""python -m nfvae.data.fetch: the public files converted into what the loaders read.

No network here, so small files in each source's own format stand in for the
downloads; the command is run on them (a file already in place is not downloaded
again) and the real conf/ loads the result.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from nfvae.data.fetch import ConversionError, convert_binarized_mnist, convert_omniglot, main
from nfvae.data.omniglot import load_downsampled

scipy_io = pytest.importorskip("scipy.io")


def write_amat(path, rows: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(map(str, row)) + "\n" for row in rows))


def test_binarized_mnist_amat_files_become_the_npz_the_config_loads(tmp_path, compose_cfg):
    rng = np.random.default_rng(0)
    rows = {split: (rng.random((n, 784)) < 0.3).astype(np.uint8)
            for split, n in (("train", 7), ("valid", 3), ("test", 4))}
    for split, r in rows.items():
        write_amat(tmp_path / "binarized_mnist" / f"binarized_mnist_{split}.amat", r)
    assert main(["binarized_mnist", "--data-dir", str(tmp_path)]) == 0
    datamodule = instantiate(compose_cfg(["data=binarized_mnist",
                                          f"data.data_dir={tmp_path}"]).data)
    for split, key in (("train", "train"), ("val", "valid"), ("test", "test")):
        x = datamodule.split(split)[0]
        assert x.shape == (len(rows[key]), 1, 28, 28)
        # row-major 28x28, in file order, exactly the stored 0/1 samples
        assert torch.equal(x, torch.from_numpy(rows[key]).float().view(-1, 1, 28, 28))


def test_amat_that_is_not_784_binary_pixels_is_refused(tmp_path):
    for split in ("train", "valid", "test"):
        write_amat(tmp_path / f"binarized_mnist_{split}.amat", np.zeros((2, 784), np.uint8))
    write_amat(tmp_path / "binarized_mnist_valid.amat", np.full((2, 784), 2, np.uint8))
    with pytest.raises(ConversionError, match="binarized_mnist_valid.amat.*784 values in"):
        convert_binarized_mnist(tmp_path, tmp_path / "out.npz")
    write_amat(tmp_path / "binarized_mnist_valid.amat", np.zeros((2, 783), np.uint8))
    with pytest.raises(ConversionError, match=r"shape \(2, 783\)"):
        convert_binarized_mnist(tmp_path, tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


def test_frey_rawface_mat_becomes_upright_faces_the_config_loads(tmp_path, compose_cfg):
    faces = np.random.default_rng(1).integers(8, 239, size=(1965, 28, 20), dtype=np.uint8)
    # Roweis' file: MATLAB array ff of shape (560, 1965), one row-major face per column
    (tmp_path / "frey_faces").mkdir()
    scipy_io.savemat(tmp_path / "frey_faces" / "frey_rawface.mat",
                     {"ff": faces.reshape(1965, 560).T})
    assert main(["frey_faces", "--data-dir", str(tmp_path)]) == 0
    with np.load(tmp_path / "frey_faces" / "freyfaces.npz") as stored:
        assert stored["data"].dtype == np.uint8
        assert np.array_equal(stored["data"].reshape(-1, 28, 20), faces)
    datamodule = instantiate(compose_cfg(["data=frey_faces", f"data.data_dir={tmp_path}"]).data)
    loaded = torch.cat([datamodule.split(s)[0] for s in ("train", "val", "test")])
    assert loaded.shape == (1965, 1, 28, 20)
    key = lambda x: sorted(map(bytes, x.reshape(len(x), -1)))  # noqa: E731
    assert key(loaded.mul(255).round().to(torch.uint8).numpy()) == key(faces)


def test_frey_mat_of_another_shape_is_refused(tmp_path):
    (tmp_path / "frey_faces").mkdir()
    scipy_io.savemat(tmp_path / "frey_faces" / "frey_rawface.mat",
                     {"ff": np.zeros((1965, 560), np.uint8)})  # faces as rows, not columns
    with pytest.raises(SystemExit, match=r"'ff' has shape \(1965, 560\)"):
        main(["frey_faces", "--data-dir", str(tmp_path)])


def omniglot_folder(root, alphabets=("Bengali", "Alphabet_of_the_Magi"), chars=2, first_id=1):
    """torchvision's layout, <alphabet>/character<NN>/<id>_<drawer>.png, 1-bit 105x105
    PNGs whose black strokes encode (character, drawer); returns {(index, drawer): bool}."""
    drawn, char_id = {}, first_id
    for alphabet in alphabets:  # ids not in the folders' alphabetical order
        for c in range(1, chars + 1):
            folder = root / alphabet / f"character{c:02d}"
            folder.mkdir(parents=True)
            for drawer in range(1, 21):
                white = np.ones((105, 105), dtype=bool)
                white[10 + 3 * (char_id - first_id), 5:100] = False  # a row per character
                white[15:90, 4 * drawer] = False  # a column per drawer
                Image.fromarray(white).convert("1").save(folder / f"{char_id:04d}_{drawer:02d}.png")
                drawn[char_id - first_id, drawer - 1] = white
            char_id += 1
    return drawn


def test_torchvision_omniglot_folders_become_the_npz_the_loader_reads(tmp_path):
    sets = {"images_background": omniglot_folder(tmp_path / "tv" / "images_background"),
            "images_evaluation": omniglot_folder(tmp_path / "tv" / "images_evaluation",
                                                 alphabets=("Atlantean",), first_id=965)}
    for name, drawn in sets.items():
        convert_omniglot(tmp_path / "tv" / name, tmp_path / "omniglot" / f"{name}.npz")
        with np.load(tmp_path / "omniglot" / f"{name}.npz") as stored:
            images, labels = stored["images"], stored["labels"]
        assert images.dtype == bool and images.shape == (len(drawn) // 20, 20, 105, 105)
        for (char, drawer), white in drawn.items():
            assert np.array_equal(images[char, drawer], white)  # True = white background
        assert labels.dtype == np.int64 and np.array_equal(labels[:, 0], np.arange(len(images)))
    x, y = load_downsampled(str(tmp_path / "omniglot"), 28)
    assert x.shape == ((4 + 2) * 20, 1, 28, 28)
    # inverted: the strokes are the bright, small part of each image
    assert 0.01 < x.mean() < 0.2
    assert y.tolist() == [c for c in range(6) for _ in range(20)]


def test_omniglot_with_a_missing_drawer_is_refused(tmp_path):
    omniglot_folder(tmp_path / "set", alphabets=("Atlantean",), chars=1)
    next((tmp_path / "set").rglob("0001_07.png")).unlink()
    with pytest.raises(ConversionError, match="0001_07.png"):
        convert_omniglot(tmp_path / "set", tmp_path / "out.npz")
