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
from ..cond import Cond, cond_index
from ..errors import UserError
from .dataset import Normaliser
from .files import IMAGE_SUFFIXES, check_real, to_nchw

CHUNK = 4096  # rows per chunk when scanning a source for statistics


class Source(Protocol):
    def __len__(self) -> int: ...

    @property
    def example_shape(self) -> tuple[int, ...]: ...

    def read(self, rows: np.ndarray) -> np.ndarray: ...


class NpySource:
    """A ``.npy`` file, memory-mapped and seen through the layout rule of :func:`to_nchw` (a view, so
    reading rows touches only those rows)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._open()
        if self.array.ndim not in (2, 3, 4) or self.array.size == 0:
            raise UserError(f"{path} has shape {list(self.array.shape)}; expected points [N, D] or images "
                            "[N, H, W], [N, C, H, W], [N, H, W, C]", arg="data")

    def _open(self) -> None:
        try:
            arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:  # noqa: BLE001  (numpy raises many kinds for a bad file)
            raise UserError(f"cannot memory-map {self.path} as a NumPy array ({type(exc).__name__}: {exc})", arg="data") from None
        check_real(arr, str(self.path))
        self.array = to_nchw(arr, str(self.path)) if arr.ndim in (3, 4) else arr

    def __getstate__(self) -> dict:
        # A DataLoader worker started by "spawn" re-opens the map instead of receiving a copy of the data.
        return {**self.__dict__, "array": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return len(self.array)

    @property
    def kind(self) -> str:
        return "points" if self.array.ndim == 2 else "images"

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    def read(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.array[np.asarray(rows)])


GRAY_MODES = ("L", "1", "I;16", "I")


class ImageFolderSource:
    """PNG/JPEG files of one size, decoded when read; grayscale (1 channel) when every file is. Headers
    (size, mode) are checked up front, which reads no pixels. ``files``: these, in this order (a folder
    captioned by its metadata.jsonl), instead of the images directly in ``path``, sorted."""

    kind = "images"

    def __init__(self, path: Path, files: Sequence[Path] | None = None) -> None:
        from PIL import Image

        self.files = list(files) if files is not None else sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise UserError(f"folder {path} has no .png/.jpg/.jpeg images", arg="data")
        first, self.gray = None, True
        for f in self.files:
            try:
                with Image.open(f) as im:
                    size, mode = im.size, im.mode
            except Exception as exc:  # noqa: BLE001
                raise UserError(f"cannot read image {f} ({exc})", arg="data") from None
            first = first or (f, size)
            if size != first[1]:
                raise UserError(f"mixed image sizes in {path}: {first[0].name} is {first[1][0]}x{first[1][1]}, {f.name} is "
                                f"{size[0]}x{size[1]}; resize them to one size", arg="data")
            self.gray = self.gray and mode in GRAY_MODES
        self.size = first[1]

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
                    # Gray modes go through L, the rest through RGB (then to RGB too in a colour folder).
                    im = im.convert("L") if im.mode in GRAY_MODES else im.convert("RGB")
                    arr = np.asarray(im if self.gray else im.convert("RGB"))
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

    def __getitems__(self, positions: list[int]) -> tuple[Tensor, Tensor]:
        # The DataLoader fetches a whole batch with one read (one fancy index into a memory map); the rows
        # come along so that the batch's condition (labels, caption ids: small, in memory) can be picked.
        return self.examples[positions], torch.tensor(positions, dtype=torch.long)


def _as_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    return batch


class _Order(torch.utils.data.Sampler):
    def __init__(self, order: ShardedOrder, start: int) -> None:
        self.order, self.start = order, start

    def __iter__(self) -> Iterator[list[int]]:
        return self.order.iterate(self.start)


class StreamBatches:
    """Batches of a :class:`LazyExamples` split, decoded by ``workers`` DataLoader processes (0: in this
    one), in the order of :class:`ShardedOrder` from step ``start``. The loop's generator is not used for
    the data order, so a streamed run's batches are not those of the in-memory path. ``cond``: the
    condition of every example of the split (e.g. caption ids), held in memory and indexed per batch."""

    def __init__(self, examples: LazyExamples, batch: int, *, seed: int, start: int = 0, workers: int = 2,
                 rank: int = 0, world: int = 1, device: torch.device | str = "cpu", cond: Cond | None = None) -> None:
        order = ShardedOrder(len(examples), batch, seed, rank, world)
        # Its own generator: a DataLoader iterator otherwise draws its base seed from the global RNG, which
        # would shift the dropout masks of a resumed run against an uninterrupted one.
        self.loader = torch.utils.data.DataLoader(
            _Examples(examples), batch_sampler=_Order(order, start), num_workers=workers, collate_fn=_as_batch,
            persistent_workers=False, prefetch_factor=4 if workers else None, generator=torch.Generator().manual_seed(seed))
        self.device, self.cond = device, cond
        self._batches: Iterator[tuple[Tensor, Tensor]] | None = None

    def sample(self, generator: torch.Generator) -> Batch:
        if self._batches is None:
            self._batches = iter(self.loader)
        try:
            x, rows = next(self._batches)
        except UserError as exc:  # re-raised by the DataLoader with the worker's traceback in its text
            last = [line for line in str(exc).splitlines() if line.strip()][-1]
            raise UserError(last.split("UserError: ", 1)[-1]) from None
        return Batch(x, cond_index(self.cond, rows)).to(self.device)
