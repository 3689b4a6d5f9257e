"""Classifier-free guidance as a denoiser wrapper (docs/math.md §10; Ho & Salimans 2022).

x̂_w = x̂_u + w·(x̂_c − x̂_u) at fixed (z_t, t), with x̂_c = x̂(z_t, t, c) and x̂_u = x̂(z_t, t, null). x̂, ε̂
and v̂ are affine in one another at fixed (z_t, t), so guiding x̂ once and deriving ε̂ from it is the same
as guiding ε̂. w = 1 is the conditional model and w = 0 the unconditional one: both are one call with c
(null), bit-identical to the unguided model; any other w is one batched call of 2B. Samplers stay
untouched: they see a denoiser, and clip (if asked) the guided x̂ only.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from .cond import GUIDANCE, Cond
from .param import DenoiserLike, Prediction, batch_times, expand_like


def null_like(cond: Cond, nulls: Mapping[str, int | float]) -> Cond:
    """``cond`` with every key replaced by its null value (same shapes, dtypes and device)."""
    missing = set(cond) - set(nulls)
    if missing:
        raise ValueError(f"no null value for the condition keys {sorted(missing)}")
    return {k: torch.full_like(v, nulls[k]) for k, v in cond.items()}


class Guided:
    """``denoiser`` guided at weight ``w`` (diffusers' ``guidance_scale``; the MCM paper's g is w − 1),
    optionally only for t in ``interval`` = (t_lo, t_hi) and w = 1 outside (Kynkäänniemi et al. 2024).
    ``w = None``: each example's own w, read from (and removed from) ``cond["guidance"]``, as when
    distilling a w-conditioned student (always one batched call)."""

    def __init__(self, denoiser: DenoiserLike, w: float | None, nulls: Mapping[str, int | float],
                 interval: tuple[float, float] | None = None) -> None:
        if interval is not None and not (0.0 <= interval[0] < interval[1] <= 1.0):
            raise ValueError(f"interval must be 0 <= t_lo < t_hi <= 1, got {interval}")
        self.denoiser, self.nulls, self.interval = denoiser, dict(nulls), interval
        self.w = None if w is None else float(w)
        self.schedule = denoiser.schedule

    def __call__(self, z_t: Tensor, t: Tensor, cond: Cond | None = None) -> Prediction:
        if cond is None:
            raise ValueError("guidance needs a condition (cond is None)")
        t = batch_times(t, z_t)
        inside = torch.ones_like(t, dtype=torch.bool) if self.interval is None else (t >= self.interval[0]) & (t <= self.interval[1])
        if self.w is None:
            cond = dict(cond)
            w_each: Tensor | float = cond.pop(GUIDANCE).to(z_t.dtype)
        else:
            w_each = self.w
            if self.w == 1.0 or not bool(inside.any()):
                return self.denoiser(z_t, t, cond)
            if self.w == 0.0 and bool(inside.all()):
                return self.denoiser(z_t, t, null_like(cond, self.nulls))
        null = null_like(cond, self.nulls)
        both = {k: torch.cat([cond[k], null[k]]) for k in cond}  # c for the first B examples, null for the rest
        out = self.denoiser(torch.cat([z_t, z_t]), torch.cat([t, t]), both)
        x_c, x_u = out.x_hat.chunk(2)
        w = expand_like(torch.where(inside, w_each, 1.0).to(x_c.dtype), x_c)
        x_w = x_u + w * (x_c - x_u)
        alpha, sigma = (expand_like(a, z_t) for a in self.schedule.alpha_sigma(t))
        return Prediction(x_w, (z_t - alpha * x_w) / sigma, x_hat_cond=x_c)


class AtGuidance:
    """A w-conditioned student's denoiser at a fixed ``w``: adds ``cond["guidance"] = w`` to every call (one
    network call per step; the student learnt the guided teacher at that w)."""

    def __init__(self, denoiser: DenoiserLike, w: float) -> None:
        self.denoiser, self.w, self.schedule = denoiser, float(w), denoiser.schedule

    def __call__(self, z_t: Tensor, t: Tensor, cond: Cond | None = None) -> Prediction:
        return self.denoiser(z_t, t, {**(cond or {}), GUIDANCE: torch.full((len(z_t),), self.w, device=z_t.device)})
