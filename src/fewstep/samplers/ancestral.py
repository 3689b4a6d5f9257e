"""Ancestral (DDPM) sampling: draw z_s from the posterior q(z_s | z_t, x = x̂), a stochastic reference."""
from __future__ import annotations

import torch
from torch import Tensor

from ..cond import Cond
from ..param import DenoiserLike, batch_times
from .ddim import coefficients, predict_x
from .spec import register_sampler


@register_sampler("ancestral")
@torch.no_grad()
def ancestral(
    denoiser: DenoiserLike,
    z: Tensor,
    ts: Tensor,
    *,
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    clip_x: bool = False,
) -> Tensor:
    """DDPM over ``ts``: z_s ~ N(μ, σ²) with α_{t|s} = α_t/α_s, σ²_{t|s} = σ_t² − α_{t|s}² σ_s²,
    μ = α_{t|s} σ_s²/σ_t² · z_t + α_s σ²_{t|s}/σ_t² · x̂,  σ² = σ²_{t|s} σ_s²/σ_t²."""
    schedule = denoiser.schedule
    for t, s in zip(ts[:-1], ts[1:]):
        t, s = batch_times(t, z), batch_times(s, z)
        alpha_t, sigma_t = coefficients(schedule, t, z)
        alpha_s, sigma_s = coefficients(schedule, s, z)
        x_hat = predict_x(denoiser, z, t, cond, clip_x)
        alpha_ts = alpha_t / alpha_s
        var_ts = (sigma_t.square() - alpha_ts.square() * sigma_s.square()).clamp_min(0.0)
        mean = alpha_ts * sigma_s.square() / sigma_t.square() * z + alpha_s * var_ts / sigma_t.square() * x_hat
        std = (var_ts * sigma_s.square() / sigma_t.square()).sqrt()
        noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        z = mean + std * noise
    return z
