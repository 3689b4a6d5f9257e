"""Heun's second-order probability-flow ODE solver (EDM's Alg. 1), the baseline aDDIM is compared with.

In the variance-exploding variables y = z/α and u = σ/α the PF ODE is dy/du = ε̂; an Euler step in
them is exactly DDIM. Heun corrects each step with ε̂ at the end point, except the last step to u = 0
(EDM does the same). Network calls: 2·steps − 1.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..cond import Cond
from ..param import DenoiserLike, batch_times
from .ddim import coefficients, predict_x
from .spec import TextOption, register_sampler


def _eps(denoiser: DenoiserLike, z: Tensor, t: Tensor, cond: Cond | None, clip_x: bool) -> Tensor:
    alpha, sigma = coefficients(denoiser.schedule, t, z)
    x_hat = predict_x(denoiser, z, t, cond, clip_x)
    return (z - alpha * x_hat) / sigma


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
    schedule = denoiser.schedule
    for t, s in zip(ts[:-1], ts[1:]):
        t, s = batch_times(t, z), batch_times(s, z)
        alpha_t, sigma_t = coefficients(schedule, t, z)
        alpha_s, sigma_s = coefficients(schedule, s, z)
        u_t, u_s = sigma_t / alpha_t, sigma_s / alpha_s
        y = z / alpha_t
        d_cur = _eps(denoiser, z, t, cond, clip_x)
        y_next = y + (u_s - u_t) * d_cur  # Euler step.
        if bool((s > 0).all()):
            d_next = _eps(denoiser, alpha_s * y_next, s, cond, clip_x)
            y_next = y + (u_s - u_t) * 0.5 * (d_cur + d_next)  # 2nd-order correction.
        z = alpha_s * y_next
    return z
