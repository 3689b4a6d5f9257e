"""DDIM and inverse DDIM (docs/math.md §3; [MCM] Eq. 4, 5).

Notation: ``t`` the current time, ``s < t`` the target time, ``x_hat`` = x̂, ``z_t``, ``z_s``.
Times are scalars or [B] tensors; α_0 = 1, σ_0 = 0 exactly, so a step to s = 0 returns x̂.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..cond import Cond
from ..param import DenoiserLike, batch_times, expand_like
from ..schedules import Schedule
from .spec import TextOption, register_sampler


def coefficients(schedule: Schedule, t: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    """(α_t, σ_t) for [B] or scalar ``t``, broadcastable against ``ref``."""
    alpha, sigma = schedule.alpha_sigma(batch_times(t, ref))
    return expand_like(alpha, ref), expand_like(sigma, ref)


def ddim_step(schedule: Schedule, x_hat: Tensor, z_t: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """DDIM_{t→s}(x̂, z_t) = α_s x̂ + (σ_s/σ_t)(z_t − α_t x̂)."""
    alpha_t, sigma_t = coefficients(schedule, t, z_t)
    alpha_s, sigma_s = coefficients(schedule, s, z_t)
    return alpha_s * x_hat + (sigma_s / sigma_t) * (z_t - alpha_t * x_hat)


def inv_ddim(schedule: Schedule, z_s: Tensor, z_t: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """invDDIM_{t→s}(z_s, z_t) = (z_s − (σ_s/σ_t) z_t) / (α_s − α_t σ_s/σ_t): the x̂ DDIM maps z_t to z_s with."""
    alpha_t, sigma_t = coefficients(schedule, t, z_t)
    alpha_s, sigma_s = coefficients(schedule, s, z_t)
    ratio = sigma_s / sigma_t
    return (z_s - ratio * z_t) / (alpha_s - alpha_t * ratio)


def predict_x(denoiser: DenoiserLike, z_t: Tensor, t: Tensor, cond: Cond | None, clip_x: bool) -> Tensor:
    """x̂(z_t, t), clipped to the image range [−1, 1] when ``clip_x``."""
    x_hat = denoiser(z_t, t, cond).x_hat
    return x_hat.clamp(-1.0, 1.0) if clip_x else x_hat


@register_sampler("ddim", text_options=(TextOption("grid", {"t": "t", "logsnr": "logsnr"}),))
@torch.no_grad()
def ddim(
    denoiser: DenoiserLike,
    z: Tensor,
    ts: Tensor,
    *,
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    clip_x: bool = False,
) -> Tensor:
    """Deterministic DDIM over the grid ``ts`` (one network call per interval)."""
    for t, s in zip(ts[:-1], ts[1:]):
        x_hat = predict_x(denoiser, z, t, cond, clip_x)
        z = ddim_step(denoiser.schedule, x_hat, z, t, s)  # DDIM, docs/math.md §3
    return z
