"""Writing results without ever leaving a half-written file (temp file, fsync, rename), and checksums."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from .errors import UserError


def check_writable(path: Path, arg: str, overwrite: bool) -> Path:
    """``path`` if a file may be written there: not existing (or ``overwrite``), not a folder, and no
    existing file where one of its folders would have to be."""
    path = Path(path)
    if path.exists() and path.is_dir():
        raise UserError(f"{path} is a folder; expected a file path", arg=arg)
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass overwrite (--overwrite) to replace it", arg=arg)
    check_folder_path(path.parent, arg)
    return path


def check_folder_path(folder: Path, arg: str) -> None:
    """No existing file stands where ``folder`` or one of its parents would be."""
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{parent} is a file, so {folder} cannot be made; expected a folder path", arg=arg)
            return


def sha256_file(path: Path | str) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path | str, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)`` on a temporary sibling, fsync it, rename it over ``path`` and
    fsync the folder: a crash leaves the old file or the new one, never a part. The folder is made only
    now, when there is something to write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_folder(path: Path | str, write: Callable[[Path], None]) -> None:
    """Make the folder ``path`` through ``write(folder)`` on a temporary sibling, fsync every file in it and
    rename it to ``path``: a crash leaves no half-written folder there. An existing ``path`` is moved aside
    first and removed only once the new folder stands in its place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = (path.with_name(f".{path.name}.{kind}{os.getpid()}") for kind in ("tmp", "old"))
    for leftover in (tmp, old):  # of an earlier process with this id that crashed
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        tmp.mkdir()
        write(tmp)
        for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        for folder in sorted((p for p in tmp.rglob("*") if p.is_dir()), reverse=True):
            _fsync_dir(folder)
        _fsync_dir(tmp)
        moved = path.exists()
        if moved:
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if moved:
                os.replace(old, path)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def save_bytes(path: Path | str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def save_text(path: Path | str, text: str) -> None:
    save_bytes(path, text.encode())


def save_json(path: Path | str, obj: Any, indent: int = 2) -> None:
    save_text(path, json.dumps(obj, indent=indent))


def save_npz(path: Path | str, **arrays: np.ndarray) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def save_png(path: Path, samples: np.ndarray, kind: str, title: str = "", reference: np.ndarray | None = None) -> None:
    """An image grid (uint8 [N, H, W, C]) or a 2D scatter plot (points [N, 2]) as a PNG file."""
    save_bytes(path, render_png(samples, kind, title, reference))


def render_png(samples: np.ndarray, kind: str, title: str = "", reference: np.ndarray | None = None) -> bytes:
    """The bytes of the PNG that :func:`save_png` writes."""
    if kind == "images":
        buf = io.BytesIO()
        _image_grid(samples).save(buf, format="PNG")
        return buf.getvalue()
    return figure_png(_scatter(samples, title, reference))


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _image_grid(images: np.ndarray, max_images: int = 256, scale: int = 4):
    from PIL import Image

    images = images[:max_images]
    n, h, w, c = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = img
    pil = Image.fromarray(grid[..., 0] if c == 1 else grid)
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def _scatter(points: np.ndarray, title: str, reference: np.ndarray | None):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    if points.shape[1] == 1:  # 1-D data: a histogram says more than a line of dots
        if reference is not None:
            ax.hist(reference[:, 0], bins=60, density=True, color="lightgray", label="data")
        ax.hist(points[:, 0], bins=60, density=True, histtype="step", color="tab:blue", label="samples")
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        plt.close(fig)
        return fig
    if points.shape[1] > 2:
        title = f"{title} (first 2 of {points.shape[1]} dimensions)"
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], s=1, c="lightgray", label="data")
    ax.scatter(points[:, 0], points[:, 1], s=1, c="tab:blue", label="samples")
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    fig.tight_layout()
    plt.close(fig)
    return fig
