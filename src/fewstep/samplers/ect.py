"""ECT's 1- and 2-step sampling (docs/math.md §7 step 6; [ECT]).

Notation: u = σ/α (EDM/VE noise level, ``u_of_t``/``t_of_u``); ``u_mid`` the 2-step re-noise level.

    1 step:  x = x̂_θ(z_1, 1)
    2 steps: x̂ = x̂_θ(z_1, 1);  z_mid = α_mid x̂ + σ_mid ε (fresh ε);  x = x̂_θ(z_mid, t_mid),  t_mid = t(u_mid)

ECT uses u_mid = 0.821 (CIFAR-10) and 1.526 (ImageNet64) for data of std σ_d = 0.5; pass
u_mid·σ_d/0.5 for data of another scale (an ECT run stores its own in the checkpoint). Only the
length of ``ts`` (1 or 2 intervals) and its start ``ts[0]`` are used: the middle level is u_mid.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..cond import Cond
from ..param import DenoiserLike
from ..schedules import t_of_u
from .ddim import coefficients, predict_x
from .spec import register_sampler

MAX_STEPS = 2


@register_sampler("ect", max_steps=MAX_STEPS)
@torch.no_grad()
def ect(
    denoiser: DenoiserLike,
    z: Tensor,
    ts: Tensor,
    *,
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    clip_x: bool = False,
    u_mid: float = 0.821,
) -> Tensor:
    """ECT sampling in len(ts) − 1 ∈ {1, 2} network calls: x̂ at ts[0], then re-noised to u_mid and denoised."""
    steps = len(ts) - 1
    if steps not in (1, 2):
        raise ValueError(f"the ect sampler takes 1 or 2 steps (ECT's 1- and 2-step sampling), got {steps}")
    x_hat = predict_x(denoiser, z, ts[0], cond, clip_x)
    if steps == 1:
        return x_hat
    t_mid = t_of_u(denoiser.schedule, u_mid)
    if not 0.0 < float(t_mid) < float(ts[0]):
        raise ValueError(f"u_mid = {u_mid} lies outside the schedule's range below t = {float(ts[0])}")
    # Re-noise with fresh noise (the consistency models' multistep sampling), then denoise once more.
    alpha, sigma = coefficients(denoiser.schedule, t_mid, z)
    eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    return predict_x(denoiser, alpha * x_hat + sigma * eps, t_mid, cond, clip_x)
