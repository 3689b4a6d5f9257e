"""Data larger than memory: a memory-mapped ``.npy`` or a folder of images, read example by example.

    source            rows of the data on disk, in data units ([n, D] points or uint8/float [n, C, H, W])
    LazyExamples      a split of a source in model units, loaded only when indexed (``train[idx]``)
    StreamBatches     the loop's batch source: a DataLoader whose workers decode on the fly, fed by
                      :class:`ShardedOrder`, a per-epoch shuffle that is sharded over ranks and starts at
                      any step, so that a resumed run draws exactly the batches an uninterrupted one would

Nothing here holds more than one batch (per worker) of the data in memory, whatever its size; statistics
(standardisation, value range, finiteness) are computed in chunks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from ..batch import Batch
from ..errors import UserError
from .dataset import Normaliser
from .files import CHANNELS, IMAGE_SUFFIXES

CHUNK = 4096  # rows per chunk when scanning a source for statistics


class Source(Protocol):
    def __len__(self) -> int: ...

    @property
    def example_shape(self) -> tuple[int, ...]: ...

    def read(self, rows: np.ndarray) -> np.ndarray: ...


class NpySource:
    """A ``.npy`` file, memory-mapped: reading rows touches only those rows."""

    def __init__(self, path: Path) -> None:
        try:
            self.array = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:  # noqa: BLE001  (numpy raises many kinds for a bad file)
            raise UserError(f"cannot memory-map {path} as a NumPy array ({type(exc).__name__}: {exc})", arg="data") from None
        self.path = path
        arr = self.array
        if np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise UserError(f"{path} has dtype {arr.dtype}; expected real numbers", arg="data")
        if arr.ndim not in (2, 3, 4) or len(arr) < 2 or arr.size == 0:
            raise UserError(f"{path} has shape {list(arr.shape)}; expected at least 2 points [N, D] or images "
                            "[N, H, W], [N, C, H, W], [N, H, W, C]", arg="data")
        self.channels_last = False
        if arr.ndim == 4:
            first, last = arr.shape[1] in CHANNELS, arr.shape[3] in CHANNELS
            if first == last:
                raise UserError(f"{path} has ambiguous image shape {list(arr.shape)}; the channel axis (size 1, 3 or 4) "
                                "must be exactly one of axis 1 or axis 3", arg="data")
            self.channels_last = last

    def __getstate__(self) -> dict:
        # A DataLoader worker started by "spawn" re-opens the map instead of receiving a copy of the data.
        return {**self.__dict__, "array": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.array = np.load(self.path, mmap_mode="r", allow_pickle=False)

    def __len__(self) -> int:
        return len(self.array)

    @property
    def kind(self) -> str:
        return "points" if self.array.ndim == 2 else "images"

    @property
    def example_shape(self) -> tuple[int, ...]:
        shape = self.array.shape[1:]
        if self.array.ndim == 2:
            return tuple(shape)
        if self.array.ndim == 3:
            return (1, *shape)
        return (shape[2], shape[0], shape[1]) if self.channels_last else tuple(shape)

    def read(self, rows: np.ndarray) -> np.ndarray:
        x = np.asarray(self.array[np.asarray(rows)])
        if x.ndim == 3:
            return x[:, None]
        return x.transpose(0, 3, 1, 2) if self.channels_last else x


class ImageFolderSource:
    """PNG/JPEG files of one size, decoded when read. Headers are checked up front (size, mode)."""

    kind = "images"

    def __init__(self, path: Path) -> None:
        from PIL import Image

        self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(self.files) < 2:
            raise UserError(f"folder {path} has fewer than 2 .png/.jpg/.jpeg images", arg="data")
        sizes, gray = set(), True
        for f in self.files:
            try:
                with Image.open(f) as im:  # reads the header only
                    sizes.add(im.size)
                    gray = gray and im.mode in ("L", "1", "I;16", "I")
            except Exception as exc:  # noqa: BLE001
                raise UserError(f"cannot read image {f} ({exc})", arg="data") from None
            if len(sizes) > 1:
                raise UserError(f"mixed image sizes in {path} ({sorted(sizes)}); resize them to one size", arg="data")
        (self.size,) = sizes
        self.gray = gray

    def __len__(self) -> int:
        return len(self.files)

    @property
    def example_shape(self) -> tuple[int, ...]:
        w, h = self.size
        return (1 if self.gray else 3, h, w)

    def read(self, rows: np.ndarray) -> np.ndarray:
        from PIL import Image

        out = np.empty((len(rows), *self.example_shape), dtype=np.uint8)
        for i, row in enumerate(np.asarray(rows)):
            f = self.files[int(row)]
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("L" if self.gray else "RGB"))
            except Exception as exc:  # noqa: BLE001
                raise UserError(f"cannot read image {f} ({exc})", arg="data") from None
            if arr.shape[:2] != out.shape[2:]:
                raise UserError(f"{f} is {arr.shape[1]}x{arr.shape[0]}; the folder's images are {self.size[0]}x{self.size[1]}", arg="data")
            out[i] = arr[None] if self.gray else arr.transpose(2, 0, 1)
        return out


def scan(source: Source, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-feature mean and std (over the rows, float64), and the min and max value, in chunks; refuses
    NaN and inf."""
    total, sq, lo, hi, count = 0.0, 0.0, np.inf, -np.inf, 0
    for start in range(0, len(rows), CHUNK):
        x = source.read(np.sort(rows[start : start + CHUNK])).astype(np.float64)
        if not np.isfinite(x).all():
            raise UserError(f"{getattr(source, 'path', 'the data')} contains NaN or inf values", arg="data")
        flat = x.reshape(len(x), -1)
        total, sq = total + flat.sum(0), sq + (flat**2).sum(0)
        lo, hi, count = min(lo, float(x.min())), max(hi, float(x.max())), count + len(x)
    mean = total / count
    return mean, np.sqrt(np.maximum(sq / count - mean**2, 0.0)), lo, hi


class LazyExamples:
    """The ``rows`` of ``source`` in model units, read when indexed: ``len``, ``shape`` and ``[idx]`` like
    a tensor of examples."""

    def __init__(self, source: Source, rows: np.ndarray, normaliser: Normaliser) -> None:
        self.source, self.rows, self.normaliser = source, np.asarray(rows), normaliser

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.source.example_shape)

    def __getitem__(self, idx: Tensor | slice | Sequence[int] | int) -> Tensor:
        rows = self.rows[idx.cpu().numpy() if isinstance(idx, Tensor) else idx]
        out = torch.from_numpy(self.normaliser.to_model(self.source.read(np.atleast_1d(rows))))
        return out[0] if np.ndim(rows) == 0 else out

    def std(self) -> float:
        """The standard deviation of every value, in model units (computed in chunks)."""
        total, sq, count = 0.0, 0.0, 0
        for start in range(0, len(self), CHUNK):
            x = self[slice(start, start + CHUNK)].double()
            total, sq, count = total + float(x.sum()), sq + float((x**2).sum()), count + x.numel()
        mean = total / count
        return float(np.sqrt(max(sq / count - mean**2, 0.0) * count / max(count - 1, 1)))


class ShardedOrder:
    """Example positions per step: a shuffle per epoch (seeded by ``seed`` and the epoch), consumed
    ``world × batch`` positions a step, this rank's ``batch`` of them; a function of the step alone, so
    iteration can start at any step."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def positions(self, step: int) -> list[int]:
        first = (step * self.world + self.rank) * self.batch
        return [int(self._at(k)) for k in range(first, first + self.batch)]

    def _at(self, k: int) -> int:
        epoch, i = divmod(k, self.n)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perm[i]

    def iterate(self, start: int) -> Iterator[list[int]]:
        step = start
        while True:
            yield self.positions(step)
            step += 1


class _Examples(torch.utils.data.Dataset):
    def __init__(self, examples: LazyExamples) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, position: int) -> Tensor:
        return self.examples[position]


class _Order(torch.utils.data.Sampler):
    def __init__(self, order: ShardedOrder, start: int) -> None:
        self.order, self.start = order, start

    def __iter__(self) -> Iterator[list[int]]:
        return self.order.iterate(self.start)


class StreamBatches:
    """Batches of a :class:`LazyExamples` split, decoded by ``workers`` DataLoader processes (0: in this
    one), in the order of :class:`ShardedOrder` from step ``start``. The loop's generator is not used for
    the data order, so a streamed run's batches are not those of the in-memory path."""

    def __init__(self, examples: LazyExamples, batch: int, *, seed: int, start: int = 0, workers: int = 2,
                 rank: int = 0, world: int = 1, device: torch.device | str = "cpu") -> None:
        order = ShardedOrder(len(examples), batch, seed, rank, world)
        # Its own generator: a DataLoader iterator otherwise draws its base seed from the global RNG, which
        # would shift the dropout masks of a resumed run against an uninterrupted one.
        self.loader = torch.utils.data.DataLoader(
            _Examples(examples), batch_sampler=_Order(order, start), num_workers=workers,
            persistent_workers=False, prefetch_factor=4 if workers else None, generator=torch.Generator().manual_seed(seed))
        self.device = device
        self._batches: Iterator[Tensor] | None = None

    def sample(self, generator: torch.Generator) -> Batch:
        if self._batches is None:
            self._batches = iter(self.loader)
        try:
            x = next(self._batches)
        except UserError as exc:  # re-raised by the DataLoader with the worker's traceback in its text
            last = [line for line in str(exc).splitlines() if line.strip()][-1]
            raise UserError(last.split("UserError: ", 1)[-1]) from None
        return Batch(x.to(self.device))
