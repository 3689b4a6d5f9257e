"""`Cond`: the conditioning of a batch, a mapping of named tensors (``{"class": [B]}``, later text
embeddings and their mask), each with the batch on axis 0.

Samplers and objectives never look inside: they pass ``cond`` to the denoiser unchanged. Only a
backbone reads the keys it declares, and only guidance needs a null value (:class:`CondSpec`).
``None`` means unconditional.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import Tensor

Cond = Mapping[str, Tensor]
GUIDANCE = "guidance"  # the key of a w-conditioned student's guidance weight, [B] float (docs/math.md §10)


@dataclass(frozen=True)
class CondSpec:
    """The keys a backbone reads and, per key, the value that stands for "no condition" (guidance)."""

    nulls: Mapping[str, int | float] = field(default_factory=dict)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.nulls)

    def null(self, batch: int, device: torch.device | str = "cpu") -> Cond | None:
        """The null condition for ``batch`` examples (None when the backbone reads no condition)."""
        if not self.nulls:
            return None
        return {k: torch.full((batch,), v, device=device) for k, v in self.nulls.items()}


def cond_slice(cond: Cond | None, start: int, stop: int) -> Cond | None:
    """Examples ``start:stop`` of every tensor."""
    return None if cond is None else {k: v[start:stop] for k, v in cond.items()}


def cond_index(cond: Cond | None, idx: Tensor) -> Cond | None:
    """The examples at ``idx`` [B] of every tensor."""
    return None if cond is None else {k: v[idx] for k, v in cond.items()}


def cond_to(cond: Cond | None, device: torch.device | str) -> Cond | None:
    return None if cond is None else {k: v.to(device) for k, v in cond.items()}


def drop_condition(cond: Cond | None, p: float, nulls: Mapping[str, int | float], generator: torch.Generator) -> Cond | None:
    """Condition dropout (docs/math.md §10): each example's condition replaced by the null one with
    probability ``p``, drawn on the CPU from ``generator`` (so a resumed run draws the same)."""
    if cond is None or p <= 0.0:
        return cond
    batch = len(next(iter(cond.values())))
    drop = torch.rand(batch, generator=generator) < p
    out = {}
    for k, v in cond.items():
        mask = drop.to(v.device).reshape((batch,) + (1,) * (v.ndim - 1))
        out[k] = torch.where(mask, torch.full_like(v, nulls[k]), v)
    return out
