"""The contract every objective shares, so one training step serves diffusion, CD, CT and ECT.

    objective(denoiser, x, cond, step, generator) -> LossOutput
    objective.sampler                  the SamplerSpec its model samples with (and is evaluated with)
    objective.state()                  figures stored with each checkpoint (e.g. N's schedule)
    objective.finalize(ema, heldout)   extras measured once after training (e.g. aDDIM's v_t table)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from ..batch import Batch
from ..cond import Cond
from ..param import Denoiser
from ..samplers import SamplerSpec


@dataclass
class LossOutput:
    loss: Tensor                 # scalar, what is back-propagated
    per_example: Tensor          # [B], detached, for logging per band of t
    t: Tensor                    # [B], the time each example was trained at
    scalars: dict[str, float] = field(default_factory=dict)  # extra figures for the log


class Objective(Protocol):
    name: str
    sampler: SamplerSpec

    def __call__(self, denoiser: Denoiser, x: Tensor, cond: Cond | None, step: int, generator: torch.Generator) -> LossOutput: ...

    def state(self) -> dict[str, Any]: ...

    def finalize(self, ema: Denoiser, heldout: Batch) -> dict[str, Any]: ...


class ObjectiveBase:
    """Defaults of the optional parts of the contract: no state, nothing to measure at the end."""

    def state(self) -> dict[str, Any]:
        return {}

    def finalize(self, ema: Denoiser, heldout: Batch) -> dict[str, Any]:
        return {}


def stratified_times(batch: int, generator: torch.Generator, t_min: float = 1e-5) -> Tensor:
    """Low-discrepancy t ~ U(0, 1) over the batch: t_i = (u + i/B) mod 1, one shared u."""
    u = torch.rand((), generator=generator)
    t = torch.remainder(u + torch.arange(batch) / batch, 1.0)
    return t.clamp_min(t_min)  # the network is never evaluated at t = 0 (math.md §1)


def per_example_mean(x: Tensor) -> Tensor:
    """Mean over all but the batch axis: [B, ...] → [B]."""
    return x.flatten(1).mean(1)


def same_mask_reference(denoiser: Any, z: Tensor, t: Tensor, cond: Cond | None) -> Tensor:
    """stopgrad x̂_θ(z, t) with the same online weights and the same dropout mask as the next forward:
    the global RNG is forked around this call, so the online forward that follows replays its state
    (math.md §5 step 6, §7 step 4). Under DDP it runs on the bare backbone, outside gradient sync."""
    devices = [z.device.index] if z.device.type == "cuda" else []
    reference = denoiser.unwrapped() if isinstance(denoiser, Denoiser) else denoiser
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        return reference(z, t, cond).x_hat
