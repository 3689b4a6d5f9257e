"""Heun's second-order probability-flow ODE solver (EDM's Alg. 1), the baseline aDDIM is compared with.

In the variance-exploding variables y = z/α and u = σ/α the PF ODE is dy/du = ε̂; an Euler step in
them is exactly DDIM. Heun corrects each step with ε̂ at the end point, except the last step to u = 0
(EDM does the same). Network calls: 2·steps − 1.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..cond import Cond
from ..param import DenoiserLike, batch_times, expand_like
from .ddim import coefficients, predict_x
from .spec import TextOption, register_sampler


def _eps(denoiser: DenoiserLike, z: Tensor, t: Tensor, cond: Cond | None, clip_x: bool) -> Tensor:
    alpha, sigma = coefficients(denoiser.schedule, t, z)
    x_hat = predict_x(denoiser, z, t, cond, clip_x)
    return (z - alpha * x_hat) / sigma


def heun_step(denoiser: DenoiserLike, z_t: Tensor, t: Tensor, s: Tensor, cond: Cond | None = None,
              clip_x: bool = False) -> Tensor:
    """One Heun step t → s ([B] times) in y = z/α, u = σ/α: the Euler (DDIM) step, corrected with ε̂ at its
    end wherever s > 0 (at s = 0, σ_s = 0 and ε̂ is undefined: Euler there, as EDM)."""
    schedule = denoiser.schedule
    t, s = batch_times(t, z_t), batch_times(s, z_t)
    alpha_t, sigma_t = coefficients(schedule, t, z_t)
    alpha_s, sigma_s = coefficients(schedule, s, z_t)
    du = sigma_s / alpha_s - sigma_t / alpha_t
    y = z_t / alpha_t
    d_cur = _eps(denoiser, z_t, t, cond, clip_x)
    y_euler = y + du * d_cur
    inside = s > 0
    if not bool(inside.any()):
        return alpha_s * y_euler
    s_safe = torch.where(inside, s, t)  # a time where ε̂ is defined; its value is discarded below
    d_next = _eps(denoiser, alpha_s * y_euler, s_safe, cond, clip_x)
    y_heun = y + du * 0.5 * (d_cur + d_next)
    return alpha_s * torch.where(expand_like(inside, y), y_heun, y_euler)


# No correction on the last step; EDM's grid by default (docs/math.md §11: on the uniform grid Heun diverges at 2–8 steps).
@register_sampler("heun", nfe=lambda steps: 2 * steps - 1, text_options=(TextOption("grid", {"edm": "edm", "t": "t"}),))
@torch.no_grad()
def heun(
    denoiser: DenoiserLike,
    z: Tensor,
    ts: Tensor,
    *,
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    clip_x: bool = False,
) -> Tensor:
    """Heun (2nd order) over ``ts``; 2·(len(ts)−1) − 1 network calls."""
    for t, s in zip(ts[:-1], ts[1:]):
        z = heun_step(denoiser, z, t, s, cond, clip_x=clip_x)
    return z
