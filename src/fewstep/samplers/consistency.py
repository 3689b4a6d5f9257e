"""The multistep consistency sampler (docs/math.md §6; [MCM] Alg. 2).

z_1 ~ N(0, I); for t = 1, (S−1)/S, …, 1/S with s = t − 1/S: z_s = DDIM_{t→s}(x̂_θ(z_t, t), z_t).
The last step goes to s = 0, where DDIM returns x̂_θ(z_{1/S}, 1/S). Exactly S network calls; the
student's segment grid is the uniform ``ts`` of S intervals.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..cond import Cond
from ..param import DenoiserLike
from .ddim import ddim
from .spec import register_sampler


@register_sampler("consistency")
@torch.no_grad()
def consistency(
    denoiser: DenoiserLike,
    z: Tensor,
    ts: Tensor,
    *,
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    clip_x: bool = False,
) -> Tensor:
    """Chain len(ts) − 1 segment jumps of a multistep consistency model (plain DDIM, no aDDIM)."""
    return ddim(denoiser, z, ts, cond=cond, clip_x=clip_x)
