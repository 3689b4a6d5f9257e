"""Time grids for training-free samplers (docs/math.md §11): where a sampler evaluates the network.

A grid is a descending float32 tensor t_0 > t_1 > … > t_N = 0 (exactly 0: the last step lands on the
data). ``t`` is uniform in time, ``logsnr`` uniform in λ (DPM-Solver's choice for small images), and
``edm`` is EDM's ρ = 7 grid in u = σ/α with u capped at 80 at the top and ending at u = 0.002 before the
final step to 0 (EDM's σ_max and σ_min): starting at u = 1808 (the clipped cosine schedule's t = 1) the
first ρ-steps are so long that Heun diverges in 2–8 steps.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..registry import Registry
from .base import Schedule, logsnr_range, time_grid, u_range

GridFn = Callable[[Schedule, int], Tensor]
GRIDS: Registry[GridFn] = Registry("grid")

EDM_RHO = 7.0
EDM_U_MAX = 80.0
EDM_U_MIN = 0.002


def _ending_at_data(t: Tensor) -> Tensor:
    """``t`` with its last point set to exactly 0 and the first clamped to ≤ 1, as float32."""
    t = t.to(torch.float32).clamp(0.0, 1.0)
    t[-1] = 0.0
    return t


@GRIDS.register("t")
def uniform_t(schedule: Schedule, steps: int) -> Tensor:
    """t_k = 1 − k/N."""
    return time_grid(steps)


@GRIDS.register("logsnr")
def uniform_logsnr(schedule: Schedule, steps: int) -> Tensor:
    """λ_k uniform from λ(1) to λ(0) (the clipped schedule's ends), t_k = λ⁻¹(λ_k); t_0 = 1, t_N = 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    lam_1, lam_0 = logsnr_range(schedule)
    lam = torch.linspace(lam_1, lam_0, steps + 1, dtype=torch.float64)
    t = schedule.t_from_logsnr(lam.float())
    t[0] = 1.0
    return _ending_at_data(t)


@GRIDS.register("edm")
def edm(schedule: Schedule, steps: int, rho: float = EDM_RHO, u_max: float = EDM_U_MAX, u_min: float = EDM_U_MIN) -> Tensor:
    """EDM's grid: u_k = (u_max^{1/ρ} + k/(N−1)·(u_min^{1/ρ} − u_max^{1/ρ}))^ρ for k < N, then t_N = 0.
    ``u_max`` is capped at the schedule's u(1) and ``u_min`` raised above its u(0)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    lo, hi = u_range(schedule)
    u_max, u_min = min(u_max, hi), max(u_min, lo * 1.01)
    k = torch.arange(steps, dtype=torch.float64) / max(steps - 1, 1)
    u = (u_max ** (1 / rho) + k * (u_min ** (1 / rho) - u_max ** (1 / rho))) ** rho
    t = schedule.t_from_logsnr((-2.0 * torch.log(u)).float())
    return _ending_at_data(torch.cat([t, torch.zeros(1)]))


def make_grid(schedule: Schedule, steps: int, grid: str = "t") -> Tensor:
    """The grid named ``grid`` with ``steps`` intervals."""
    return GRIDS.get(grid, arg="grid")(schedule, steps)
