"""Training-free multistep solvers of the probability-flow ODE (docs/math.md §11): DPM-Solver++(2M)
(Lu et al. 2022, Alg. 2) and UniPC with B(h) = e^{−h} − 1 (Zhao et al. 2023, "bh2"), both order 2 in
data prediction. They are what a user gets without distilling, so every student is compared with them.

Notation: ℓ_t = λ_t/2 = log(α_t/σ_t); on a step t → s, h = ℓ_s − ℓ_t. Both solvers write their update
as a DDIM step with an extrapolated data estimate D in place of x̂ (the exponential integrator's
z_s = (σ_s/σ_t) z_t − α_s (e^{−h} − 1) D is exactly DDIM_{t→s}(D, z_t)), so the step to s = 0
(h = ∞) returns D, and with first-order D = x̂ it *is* DDIM.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..cond import Cond
from ..param import DenoiserLike, batch_times, expand_like
from ..schedules import Schedule
from .ddim import ddim_step, predict_x
from .spec import TextOption, register_sampler

# Uniform in t by default: measured better than uniform log-SNR at 4–16 steps on moons, digits and
# checkerboard (benchmarks/results/sampler_sweep.md), where ±15 of clipped log-SNR spends steps at the ends.
GRID = TextOption("grid", {"t": "t", "logsnr": "logsnr"})


def half_logsnr(schedule: Schedule, t: Tensor) -> float:
    """ℓ_t = λ_t/2 as a Python float (the grid is shared by the whole batch)."""
    return 0.5 * float(schedule.logsnr(torch.as_tensor(t, dtype=torch.float32).reshape(1)))


def multistep_estimate(x_hat: Tensor, x_prev: Tensor, r: float) -> Tensor:
    """DPM-Solver++(2M)'s D = (1 + 1/(2r)) x̂_{i−1} − 1/(2r) x̂_{i−2}, r = h_{i−1}/h_i."""
    return x_hat + (x_hat - x_prev) / (2.0 * r)


def unipc_weights(h: float, r: float, order: int) -> tuple[float, float]:
    """UniC's (ρ_1, ρ_p) for B(h) = e^{−h} − 1: (0, ½) at order 1; at order 2 the solution of
    [[1, 1], [r, 1]] ρ = (b_1, b_2), r = (ℓ_{i−2} − ℓ_{i−1})/h (negative on a descending grid)."""
    if order == 1:
        return 0.0, 0.5
    hh = -h
    b_h = math.expm1(hh)
    g1 = b_h / hh - 1.0
    b1 = g1 / b_h
    b2 = 2.0 * (g1 / hh - 0.5) / b_h
    rho1 = (b1 - b2) / (1.0 - r)
    return rho1, b1 - rho1


def midpoint_step(denoiser: DenoiserLike, z_t: Tensor, t: Tensor, s: Tensor, x_hat_t: Tensor,
                  cond: Cond | None = None) -> Tensor:
    """DPM-Solver++(2S) with r = ½, one step t → s ([B] times): DDIM to the log-SNR midpoint m, then
    DDIM_{t→s} with x̂(z_m, m), the second-order estimate. One extra call per step; at s = 0 (λ = ∞,
    no midpoint) it is DDIM."""
    schedule = denoiser.schedule
    t, s = batch_times(t, z_t), batch_times(s, z_t)
    inside = s > 0
    if not bool(inside.any()):
        return ddim_step(schedule, x_hat_t, z_t, t, s)
    m = schedule.t_from_logsnr(0.5 * (schedule.logsnr(t) + schedule.logsnr(s)))
    m = torch.where(inside, m, t)  # where s = 0 the midpoint's estimate is discarded below
    z_m = ddim_step(schedule, x_hat_t, z_t, t, m)
    x_hat_m = denoiser(z_m, m, cond).x_hat
    d = torch.where(expand_like(inside, x_hat_t), x_hat_m, x_hat_t)
    return ddim_step(schedule, d, z_t, t, s)


@register_sampler("dpmpp2m", text_options=(GRID,))
@torch.no_grad()
def dpmpp2m(
    denoiser: DenoiserLike,
    z: Tensor,
    ts: Tensor,
    *,
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    clip_x: bool = False,
) -> Tensor:
    """DPM-Solver++(2M) over ``ts``: one network call per interval; the first step and the step to
    s = 0 are first order (DDIM)."""
    schedule = denoiser.schedule
    x_prev, h_prev = None, None
    for t, s in zip(ts[:-1], ts[1:]):
        x_hat = predict_x(denoiser, z, t, cond, clip_x)
        h = half_logsnr(schedule, s) - half_logsnr(schedule, t) if s > 0 else math.inf
        d = x_hat if x_prev is None or s == 0 else multistep_estimate(x_hat, x_prev, h_prev / h)
        z = ddim_step(schedule, d, z, t, s)
        x_prev, h_prev = x_hat, h
    return z


@register_sampler("unipc", text_options=(GRID,))
@torch.no_grad()
def unipc(
    denoiser: DenoiserLike,
    z: Tensor,
    ts: Tensor,
    *,
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    clip_x: bool = False,
) -> Tensor:
    """UniPC (order 2, bh2) over ``ts``: the DPM-Solver++(2M) predictor, and after each evaluation but
    the last a corrector that reuses it, so N intervals cost N calls. Predictor order
    p_i = min(2, i, N − i + 1) for step i = 1…N (diffusers' ``lower_order_final``)."""
    schedule = denoiser.schedule
    n = len(ts) - 1
    ell = [half_logsnr(schedule, t) for t in ts[:-1]]  # the step to 0 never needs ℓ_0
    x_hat = predict_x(denoiser, z, ts[0], cond, clip_x)
    x_prev = None  # x̂_{i−2}
    for i in range(1, n + 1):
        t, s = ts[i - 1], ts[i]
        order = min(2, i, n - i + 1)
        if i == n:  # the step to s = 0: z = x̂_{n−1}, evaluated at the last predicted state
            return ddim_step(schedule, x_hat, z, t, s)
        h = ell[i] - ell[i - 1]
        r = (ell[i - 2] - ell[i - 1]) / h if order == 2 else 0.0  # UniPC's r; DPM-Solver's is −r
        d = x_hat if order == 1 else multistep_estimate(x_hat, x_prev, -r)
        z_pred = ddim_step(schedule, d, z, t, s)                  # UniP: predict z̃_i
        x_next = predict_x(denoiser, z_pred, s, cond, clip_x)     # x̂_i at the prediction
        rho1, rho_p = unipc_weights(h, r, order)
        d = x_hat + rho_p * (x_next - x_hat)
        if order == 2:
            d = d + rho1 * (x_prev - x_hat) / r
        z = ddim_step(schedule, d, z, t, s)                       # UniC: correct z_i with x̂_i
        x_prev, x_hat = x_hat, x_next
    return z
