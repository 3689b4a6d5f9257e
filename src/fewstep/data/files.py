"""Reading a user's data: ``.npy``/``.npz`` arrays and folders of PNG/JPEG images, with their labels and
captions where they have them.

Captions: an .npz's ``captions`` array (unicode, one per example), or a folder's ``metadata.jsonl`` (the
datasets library's imagefolder convention: one JSON object a line, ``file_name`` relative to the folder and
``text``). A folder is read by the first of these that applies: a metadata.jsonl (its images, anywhere under
the folder, with captions; labels too when every image sits in a class sub-folder), class sub-folders
(labels), plain image files.

Layout rule for 4-D image arrays: the channel axis is the one of size 1, 3 or 4. [N, C, H, W] when
only axis 1 qualifies, [N, H, W, C] when only axis 3 does. If both or neither do (e.g. [N, 3, 8, 3]),
the shape is ambiguous and we refuse rather than guess.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from ..errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
CHANNELS = (1, 3, 4)
REAL_KINDS = "biuf"     # numpy dtype kinds of data fewstep reads: bool, signed, unsigned, float


def read_array(path: Path) -> np.ndarray:
    """The single array in a .npy, or in a .npz (its only array, or the one named ``x``/``data``/``samples``)."""
    try:
        # From the bytes in memory: given a path, numpy leaves the file open when a damaged .npz fails to parse.
        loaded = np.load(io.BytesIO(Path(path).read_bytes()), allow_pickle=False)
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


def read_captions(path: Path, n: int) -> tuple[str, ...] | None:
    """The ``captions`` array of an .npz, if it has one: unicode strings (dtype kind 'U'), one per
    example; None without one. Object arrays would need pickle, which fewstep never loads."""
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        return None
    with loaded:
        if "captions" not in loaded.files or len(loaded.files) == 1:
            return None
        try:
            captions = loaded["captions"]
        except ValueError as exc:
            if "allow_pickle" not in str(exc):
                raise UserError(f"cannot read array 'captions' of {path} ({exc})", arg="data") from None
            raise UserError(f"{path}: 'captions' is an object array, which fewstep does not load (it would need pickle); "
                            "save it with a unicode dtype, e.g. np.array(captions, dtype=str)", arg="data") from None
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"cannot read array 'captions' of {path} ({type(exc).__name__}: {exc})", arg="data") from None
    if not isinstance(captions, np.ndarray) or captions.dtype.kind != "U":
        kind = captions.dtype if isinstance(captions, np.ndarray) else "not an array"
        raise UserError(f"{path}: 'captions' must be unicode strings, got {kind}; save them with "
                        "np.array(captions, dtype=str)", arg="data")
    if captions.ndim != 1 or len(captions) != n:
        raise UserError(f"{path}: 'captions' must be one string per example ({n}), got shape {list(captions.shape)}", arg="data")
    return tuple(str(c) for c in captions)


METADATA = "metadata.jsonl"  # the datasets library's imagefolder convention: {"file_name": ..., "text": ...} a line


def read_metadata(path: Path) -> tuple[list[Path], tuple[str, ...], np.ndarray | None, tuple[str, ...] | None]:
    """A folder captioned by its ``metadata.jsonl`` → (image files, sorted by their path in the folder;
    their captions; labels and class names when every image sits in a class sub-folder, else None, None).
    Every image under the folder needs exactly one line, and every line an image."""
    meta = path / METADATA
    try:
        lines = meta.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {meta} as UTF-8 text ({exc})", arg="data") from None
    texts: dict[str, str] = {}
    where: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if line.strip():
            name, text = _metadata_line(meta, number, line, path)
            if name in where:
                raise UserError(f"{meta} line {number}: {name!r} is listed already on line {where[name]}", arg="data")
            texts[name], where[name] = text, number
    if not texts:
        raise UserError(f"{meta} has no lines; expected one JSON object per image with 'file_name' and 'text'", arg="data")
    unlisted = sorted(set(images_under(path)) - set(texts))
    if unlisted:
        raise UserError(f"{meta}: {unlisted[0]} has no line ({len(unlisted)} images have none); every image in the "
                        "folder needs a caption", arg="data")
    names = sorted(texts)
    labels, classes = _metadata_classes(path, names)
    return [path / n for n in names], tuple(texts[n] for n in names), labels, classes


def _metadata_line(meta: Path, number: int, line: str, folder: Path) -> tuple[str, str]:
    """One line of a metadata.jsonl → (the image's path in the folder, normalised; its caption)."""
    where = f"{meta} line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})", arg="data") from None
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object with 'file_name' and 'text', got {type(record).__name__}", arg="data")
    for key in ("file_name", "text"):
        if key not in record:
            raise UserError(f"{where}: no {key!r}; each line needs 'file_name' and 'text'", arg="data")
        if not isinstance(record[key], str):
            raise UserError(f"{where}: {key!r} must be a string, got {type(record[key]).__name__}", arg="data")
    name = os.path.normpath(record["file_name"].replace("\\", "/")).replace(os.sep, "/")
    if os.path.isabs(name) or name == ".." or name.startswith("../"):
        raise UserError(f"{where}: {record['file_name']!r} is outside the folder; file_name is relative to it", arg="data")
    if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"{where}: {record['file_name']!r} is not a .png/.jpg/.jpeg image", arg="data")
    if not (folder / name).is_file():
        raise UserError(f"{where}: {record['file_name']!r} does not exist in {folder}", arg="data")
    return name, record["text"]


def images_under(path: Path) -> list[str]:
    """Paths (relative, '/'-separated) of the images anywhere under ``path``, hidden folders and files aside."""
    found = []
    for p in path.rglob("*"):
        rel = p.relative_to(path)
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not any(part.startswith(".") for part in rel.parts):
            found.append(rel.as_posix())
    return found


def _metadata_classes(path: Path, names: list[str]) -> tuple[np.ndarray | None, tuple[str, ...] | None]:
    """Labels by class sub-folder (sorted by name, as for a folder without captions) when every image is
    directly in one; otherwise the images have no labels."""
    parents = [n.split("/")[0] if n.count("/") == 1 else None for n in names]
    if any(p is None for p in parents):
        return None, None
    classes = tuple(sorted(set(parents)))
    return np.array([classes.index(p) for p in parents], dtype=np.int64), classes


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
