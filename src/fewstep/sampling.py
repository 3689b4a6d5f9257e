"""Drawing samples in batches: the noise, the time grid, the sampler, with memory flat in the count."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .errors import UserError
from .param import DenoiserLike
from .samplers import MAX_STEPS, SAMPLERS
from .schedules import time_grid


def nfe(sampler: str, steps: int) -> int:
    """Network calls of ``sampler`` over ``steps`` intervals (Heun skips its last correction)."""
    return 2 * steps - 1 if sampler == "heun" else steps


def check_steps(steps: int, flag: str = "--steps") -> int:
    if not isinstance(steps, int) or steps < 1:
        raise UserError(f"{flag}: expected a positive integer number of steps, got {steps!r}")
    return steps


@torch.no_grad()
def generate(
    denoiser: DenoiserLike,
    n: int,
    shape: Sequence[int],
    *,
    sampler: str = "ddim",
    steps: int = 64,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    cond: Tensor | None = None,
    **options: Any,
) -> Tensor:
    """``n`` samples in model units, on the CPU. Deterministic given ``seed`` and ``batch_size``."""
    if sampler not in SAMPLERS:
        raise UserError(f"--sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    check_steps(steps)
    if steps > MAX_STEPS.get(sampler, steps):
        raise UserError(f"--steps: the {sampler} sampler takes at most {MAX_STEPS[sampler]} steps, got {steps}")
    if n < 1:
        raise UserError(f"-n: expected a positive number of samples, got {n}")
    device = torch.device(device)
    dims = int(torch.tensor(shape).prod())
    batch_size = batch_size or max(64, min(n, (1 << 22) // max(dims, 1), 4096))
    ts = time_grid(steps).to(device)
    noise_gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        z = torch.randn((count, *shape), generator=noise_gen).to(device)
        # Stochastic samplers draw from their own stream, seeded per batch from the noise stream: a seed
        # computed from ``seed`` alone (e.g. seed·K + i) equals the noise seed for seed 0, and then the
        # "fresh" noise of a re-noising step is the initial noise again.
        step_seed = int(torch.randint(0, 2**62, (1,), generator=noise_gen))
        step_gen = torch.Generator(device=device).manual_seed(step_seed)
        c = None if cond is None else cond[start : start + count].to(device)
        x = SAMPLERS[sampler](denoiser, z, ts, cond=c, generator=step_gen, **options)
        out.append(x.float().cpu())
    return torch.cat(out)
