"""What the training loop consumes: `Batch(x, cond)` and a source of them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .cond import Cond, cond_index, cond_slice, cond_to


@dataclass
class Batch:
    x: Tensor                  # [B, ...] examples in model units
    cond: Cond | None = None   # their conditioning, or None (unconditional)

    def __len__(self) -> int:
        return len(self.x)

    def head(self, n: int) -> "Batch":
        return Batch(self.x[:n], cond_slice(self.cond, 0, n))

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.x.to(device), cond_to(self.cond, device))


class BatchSource(Protocol):
    def sample(self, generator: torch.Generator) -> Batch: ...


class RandomBatches:
    """Batches of ``size`` examples drawn uniformly with replacement from in-memory ``data``, with the
    loop's data generator (so that resuming restores the batch sequence exactly)."""

    def __init__(self, data: Batch, size: int, device: torch.device | str = "cpu") -> None:
        self.data = data.to(device)
        self.size = size
        self.device = device

    def sample(self, generator: torch.Generator) -> Batch:
        idx = torch.randint(len(self.data), (self.size,), generator=generator).to(self.device)
        return Batch(self.data.x[idx], cond_index(self.data.cond, idx))
