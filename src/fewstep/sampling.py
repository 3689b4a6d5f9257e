"""Drawing samples in batches: the noise, the time grid, the sampler, with memory flat in the count."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .cond import Cond, cond_slice, cond_to
from .errors import UserError
from .param import DenoiserLike
from .samplers import SamplerSpec, parse_sampler
from .schedules import make_grid


@torch.no_grad()
def generate(
    denoiser: DenoiserLike,
    n: int,
    shape: Sequence[int],
    sampler: SamplerSpec | str = "ddim",
    steps: int | None = None,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    cond: Cond | None = None,
    **options: Any,
) -> Tensor:
    """``n`` samples in model units, on the CPU, with ``sampler`` (a spec, or its string form) over
    ``steps`` (default: the spec's, else 64). The spec's options, overridden by ``options``, go to the
    sampler as they are (so a named choice such as aDDIM's ``variance="table"`` must be resolved by the
    caller, see ``Run.sample_tensor``). Deterministic given ``seed`` and ``batch_size``."""
    spec = parse_sampler(sampler) if isinstance(sampler, str) else sampler
    spec = spec.with_steps(steps if steps is not None else spec.steps or 64).check()
    if n < 1:
        raise UserError(f"expected a positive number of samples, got {n}", arg="n")
    device = torch.device(device)
    dims = int(torch.tensor(shape).prod())
    batch_size = batch_size or max(64, min(n, (1 << 22) // max(dims, 1), 4096))
    ts = make_grid(denoiser.schedule, spec.steps, options.pop("grid", spec.grid)).to(device)
    noise_gen = torch.Generator().manual_seed(seed)
    fn = spec.entry.fn
    options = {**spec.sampler_kwargs(), **options}
    out = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        z = torch.randn((count, *shape), generator=noise_gen).to(device)
        # Stochastic samplers draw from their own stream, seeded per batch from the noise stream: a seed
        # computed from ``seed`` alone (e.g. seed·K + i) equals the noise seed for seed 0, and then the
        # "fresh" noise of a re-noising step is the initial noise again.
        step_seed = int(torch.randint(0, 2**62, (1,), generator=noise_gen))
        step_gen = torch.Generator(device=device).manual_seed(step_seed)
        c = cond_to(cond_slice(cond, start, start + count), device)
        x = fn(denoiser, z, ts, cond=c, generator=step_gen, **options)
        out.append(x.float().cpu())
    return torch.cat(out)
