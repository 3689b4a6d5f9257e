"""Reading a user's data: ``.npy``/``.npz`` arrays and folders of PNG/JPEG images.

Layout rule for 4-D image arrays: the channel axis is the one of size 1, 3 or 4. [N, C, H, W] when
only axis 1 qualifies, [N, H, W, C] when only axis 3 does. If both or neither do (e.g. [N, 3, 8, 3]),
the shape is ambiguous and we refuse rather than guess.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
CHANNELS = (1, 3, 4)
REAL_KINDS = "biuf"     # numpy dtype kinds of data fewstep reads: bool, signed, unsigned, float


def read_array(path: Path) -> np.ndarray:
    """The single array in a .npy, or in a .npz (its only array, or the one named ``x``/``data``/``samples``)."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises many kinds for a bad file
        raise UserError(f"cannot read {path} as a NumPy array ({type(exc).__name__}: {exc})", arg="data") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        names = list(loaded.files)
        chosen = next((key for key in ("x", "data", "samples", "images", "points") if key in names), None)
        if chosen is None and len(names) == 1:
            chosen = names[0]
        if chosen is None:
            raise UserError(f"{path} holds arrays {names}; expected one array or one named 'x', 'data' or 'samples'", arg="data")
        try:  # members are read only now: a damaged or pickled one fails here
            member = loaded[chosen]
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"cannot read array {chosen!r} of {path} ({type(exc).__name__}: {exc})", arg="data") from None
    if not isinstance(member, np.ndarray):  # numpy hands back the raw bytes of a member that is not an .npy
        raise UserError(f"{path}: its member {chosen!r} is not a NumPy array", arg="data")
    return member


def read_labels(path: Path, n: int) -> np.ndarray | None:
    """The ``labels`` array of an .npz, if it has one: integers 0…K−1, one per example, every class with at
    least one example (K = max + 1); None without one."""
    loaded = np.load(path, allow_pickle=False)  # read_array opened it already: it loads
    if isinstance(loaded, np.ndarray):  # an .npy under an .npz name holds one array, no labels
        return None
    with loaded:
        if "labels" not in loaded.files or len(loaded.files) == 1:  # a lone array is the data, whatever its name
            return None
        try:
            labels = loaded["labels"]
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"cannot read array 'labels' of {path} ({type(exc).__name__}: {exc})", arg="data") from None
    if not isinstance(labels, np.ndarray) or labels.ndim != 1 or len(labels) != n:
        shape = list(labels.shape) if isinstance(labels, np.ndarray) else "not an array"
        raise UserError(f"{path}: 'labels' must be one integer per example ({n}), got shape {shape}", arg="data")
    if labels.dtype.kind not in "iu":
        raise UserError(f"{path}: 'labels' must be integers, got {labels.dtype}", arg="data")
    if labels.min() < 0:
        raise UserError(f"{path}: 'labels' must be class indices ≥ 0, got {int(labels.min())}", arg="data")
    empty = sorted(set(range(int(labels.max()) + 1)) - set(labels.tolist()))
    if empty:
        raise UserError(f"{path}: classes {empty[:5]} have no examples; labels must be 0…K−1 with every class present", arg="data")
    return labels.astype(np.int64)


def to_nchw(arr: np.ndarray, source: str) -> np.ndarray:
    """[N, H, W] or 4-D → [N, C, H, W] by the layout rule above."""
    if arr.ndim == 3:
        return arr[:, None]
    first, last = arr.shape[1] in CHANNELS, arr.shape[3] in CHANNELS
    if first and not last:
        return arr
    if last and not first:
        return arr.transpose(0, 3, 1, 2)
    raise UserError(
        f"{source} has ambiguous image shape {list(arr.shape)}; the channel axis (size 1, 3 or 4) must be "
        "exactly one of axis 1 ([N, C, H, W]) or axis 3 ([N, H, W, C]); transpose it and save again",
        arg="data",
    )


def image_range(arr: np.ndarray, source: str) -> tuple[float, float]:
    """The value range an image array is in: uint8 → [0, 255]; floats in [0, 1], [−1, 1] or [0, 255]."""
    if arr.dtype == np.uint8:
        return 0.0, 255.0
    lo, hi = float(arr.min()), float(arr.max())
    for rng in ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)):
        if lo >= rng[0] and hi <= rng[1]:
            return rng
    raise UserError(f"{source} has float image values in [{lo:.3g}, {hi:.3g}]; expected [0, 1], [-1, 1] or [0, 255]", arg="data")


def check_real(arr: np.ndarray, source: str) -> None:
    """Data are real numbers: not complex, datetime, timedelta, strings or objects."""
    if arr.dtype.kind not in REAL_KINDS:
        raise UserError(f"{source} has dtype {arr.dtype}; expected real numbers", arg="data")


def class_folders(path: Path) -> list[Path]:
    """The sub-folders of ``path`` when it holds images only there (torchvision's ImageFolder layout),
    sorted by name as strings; [] for a folder of images."""
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir() if p.is_file()):
        return []
    return sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def read_class_folders(path: Path, folders: list[Path]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images of every class sub-folder → (uint8 [N, C, H, W], labels [N], class names by index)."""
    images, labels = [], []
    for index, folder in enumerate(folders):
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file()):
            raise UserError(f"{folder}: the class {folder.name!r} has no PNG/JPEG images", arg="data")
        images.append(read_image_folder(folder))
        labels.append(np.full(len(images[-1]), index, dtype=np.int64))
    shapes = sorted({tuple(a.shape[1:]) for a in images})
    if len(shapes) > 1:
        raise UserError(f"{path}: the class folders hold images of different shapes {[list(s) for s in shapes]}", arg="data")
    return np.concatenate(images), np.concatenate(labels), tuple(f.name for f in folders)


def read_image_folder(path: Path) -> np.ndarray:
    """A folder of PNG/JPEG files → uint8 [N, C, H, W]; grayscale stays 1 channel when every file is."""
    from .stream import ImageFolderSource

    folder = ImageFolderSource(path)
    return folder.read(np.arange(len(folder)))
