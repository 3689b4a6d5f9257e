"""The `Dataset` every command works on: model-unit tensors, a fixed held-out split, and the map back.

Model units: points are standardised (per-dimension mean 0, std 1; for
``gaussians8`` the mixture's analytic moments, so its exact denoiser applies); images are in [−1, 1],
[N, C, H, W]. ``to_data_units`` maps samples back: points to the data's own units, images to uint8
[N, H, W, C].
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import Tensor

HELDOUT_SEED = 20240311  # fixed: the held-out split is part of the evaluation protocol


@dataclass(frozen=True)
class Normaliser:
    """x_model = (x_data − shift) / scale, broadcast over the last axis (points) or as scalars (images)."""

    kind: Literal["points", "images"]
    shift: tuple[float, ...]
    scale: tuple[float, ...]

    def to_model(self, x: np.ndarray) -> np.ndarray:
        shift, scale = self._arrays(x.ndim)
        return ((x.astype(np.float64) - shift) / scale).astype(np.float32)

    def to_data(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "points":
            shift, scale = self._arrays(x.ndim)
            return (x.astype(np.float64) * scale + shift).astype(np.float32)
        # Images leave in uint8 [N, H, W, C] whatever the input range was.
        unit = (np.clip(x, -1.0, 1.0) + 1.0) * 127.5
        return np.rint(unit).astype(np.uint8).transpose(0, 2, 3, 1)

    def _arrays(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        shift, scale = np.asarray(self.shift), np.asarray(self.scale)
        if self.kind == "images":
            return shift.reshape(()), scale.reshape(())
        return shift, scale

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "shift": list(self.shift), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normaliser":
        return cls(d["kind"], tuple(d["shift"]), tuple(d["scale"]))


@dataclass
class Dataset:
    name: str
    normaliser: Normaliser
    train: Any                         # [N, D] or [N, C, H, W], model units: a Tensor, or LazyExamples (streamed)
    heldout: Tensor                    # fixed split, same units
    train_labels: Tensor | None = None
    heldout_labels: Tensor | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None  # index → name (class sub-folders); None: the index is the name
    train_captions: tuple[str, ...] | None = None
    heldout_captions: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    train_captions: tuple[str, ...] | None = None    # one caption per example, aligned with train
    heldout_captions: tuple[str, ...] | None = None  # … and with heldout

    @property
    def kind(self) -> str:
        return self.normaliser.kind

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(self.train.shape[1:])

    def train_std(self) -> float:
        """The standard deviation of every training value in model units (σ_d), streamed data included."""
        return float(self.train.double().std()) if isinstance(self.train, Tensor) else self.train.std()

    def to_data_units(self, x: Tensor) -> np.ndarray:
        return self.normaliser.to_data(x.detach().cpu().float().numpy())


def heldout_split(n: int, fraction: float, max_heldout: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed permutation split: (train indices, held-out indices)."""
    perm = np.random.default_rng(HELDOUT_SEED).permutation(n)
    k = min(max_heldout, max(1, int(round(fraction * n)))) if n > 1 else 0
    return np.sort(perm[k:]), np.sort(perm[:k])


def make_dataset(
    name: str,
    x_model: np.ndarray,
    normaliser: Normaliser,
    labels: np.ndarray | None = None,
    *,
    fraction: float = 0.2,
    max_heldout: int = 5000,
    meta: dict[str, Any] | None = None,
    captions: Sequence[str] | None = None,
) -> Dataset:
    """The data set of ``x_model`` with its fixed held-out split; ``labels`` and ``captions`` (one per
    example) are split the same way."""
    if captions is not None and len(captions) != len(x_model):
        raise ValueError(f"make_dataset: {len(captions)} captions for {len(x_model)} examples")
    tr, ho = heldout_split(len(x_model), fraction, max_heldout)
    x = torch.from_numpy(np.ascontiguousarray(x_model, dtype=np.float32))
    y = None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return Dataset(
        name=name,
        normaliser=normaliser,
        train=x[tr],
        heldout=x[ho],
        train_labels=None if y is None else y[tr],
        heldout_labels=None if y is None else y[ho],
        num_classes=None if y is None else int(y.max()) + 1,
        meta=meta or {},
        train_captions=None if captions is None else tuple(str(captions[i]) for i in tr),
        heldout_captions=None if captions is None else tuple(str(captions[i]) for i in ho),
    )
