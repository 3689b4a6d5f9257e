"""Noise schedules of the variance-preserving process (SPEC §1).

Notation (SPEC → code):
    t ∈ [0, 1]   ``t``        time, 0 = data, 1 = (almost) pure noise
    λ_t          ``logsnr``   log(α_t² / σ_t²)
    α_t, σ_t     ``alpha``, ``sigma``   with α² + σ² = 1

Schedules are stateless: every method is a closed form of ``t``. At t = 0 ``alpha_sigma`` returns
α = 1, σ = 0 exactly (the data itself, SPEC §1), while ``logsnr`` stays clipped at λ_max so that a
network input is always finite.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

LOGSNR_MIN = -15.0
LOGSNR_MAX = 15.0


@dataclass(frozen=True)
class CosineSchedule:
    """Cosine schedule in log-SNR, clipped to [logsnr_min, logsnr_max], optionally shifted.

    λ(t) = −2 log tan(a + t (b − a)) + shift,  a = atan(exp(−λ_max/2)), b = atan(exp(−λ_min/2)).
    ``shift = 2 log(n / res)`` gives simple diffusion's shifted cosine (SPEC §1); the clip range is
    shifted with it so that the end points stay at the clipped values of the unshifted schedule + shift.
    """

    logsnr_min: float = LOGSNR_MIN
    logsnr_max: float = LOGSNR_MAX
    shift: float = 0.0

    @property
    def _ab(self) -> tuple[float, float]:
        a = math.atan(math.exp(-0.5 * self.logsnr_max))
        b = math.atan(math.exp(-0.5 * self.logsnr_min))
        return a, b

    def logsnr(self, t: Tensor) -> Tensor:
        a, b = self._ab
        t = torch.as_tensor(t, dtype=torch.float32)
        return -2.0 * torch.log(torch.tan(a + t.clamp(0.0, 1.0) * (b - a))) + self.shift

    def t_from_logsnr(self, logsnr: Tensor) -> Tensor:
        """Inverse of ``logsnr`` on [λ(1), λ(0)]."""
        a, b = self._ab
        logsnr = torch.as_tensor(logsnr, dtype=torch.float32)
        t = (torch.atan(torch.exp(-0.5 * (logsnr - self.shift))) - a) / (b - a)
        return t.clamp(0.0, 1.0)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return alpha_sigma_from_logsnr(self.logsnr(t), t)

    def to_dict(self) -> dict[str, Any]:
        return {"name": "cosine", **asdict(self)}


@dataclass(frozen=True)
class InterpolatedSchedule:
    """λ(t) = t·λ_shift(t; n_lo) + (1 − t)·λ_shift(t; n_hi) for images of side ``res`` (SPEC §1)."""

    res: int
    n_lo: int = 32
    n_hi: int = 256
    logsnr_min: float = LOGSNR_MIN
    logsnr_max: float = LOGSNR_MAX

    def _parts(self) -> tuple[CosineSchedule, CosineSchedule]:
        lo = CosineSchedule(self.logsnr_min, self.logsnr_max, 2.0 * math.log(self.n_lo / self.res))
        hi = CosineSchedule(self.logsnr_min, self.logsnr_max, 2.0 * math.log(self.n_hi / self.res))
        return lo, hi

    def logsnr(self, t: Tensor) -> Tensor:
        lo, hi = self._parts()
        t = torch.as_tensor(t, dtype=torch.float32).clamp(0.0, 1.0)
        return t * lo.logsnr(t) + (1.0 - t) * hi.logsnr(t)

    def t_from_logsnr(self, logsnr: Tensor) -> Tensor:
        # λ is monotone in t, so bisection is exact to float precision in 40 halvings.
        logsnr = torch.as_tensor(logsnr, dtype=torch.float32)
        lo_t = torch.zeros_like(logsnr)
        hi_t = torch.ones_like(logsnr)
        for _ in range(40):
            mid = 0.5 * (lo_t + hi_t)
            above = self.logsnr(mid) > logsnr
            lo_t = torch.where(above, mid, lo_t)
            hi_t = torch.where(above, hi_t, mid)
        return 0.5 * (lo_t + hi_t)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return alpha_sigma_from_logsnr(self.logsnr(t), t)

    def to_dict(self) -> dict[str, Any]:
        return {"name": "interpolated", **asdict(self)}


Schedule = CosineSchedule | InterpolatedSchedule


def alpha_sigma_from_logsnr(logsnr: Tensor, t: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """α = sqrt(sigmoid(λ)), σ = sqrt(sigmoid(−λ)); exactly (1, 0) where t == 0 (SPEC §1)."""
    alpha = torch.sigmoid(logsnr).sqrt()
    sigma = torch.sigmoid(-logsnr).sqrt()
    if t is not None:
        at_data = torch.as_tensor(t) == 0
        alpha = torch.where(at_data, torch.ones_like(alpha), alpha)
        sigma = torch.where(at_data, torch.zeros_like(sigma), sigma)
    return alpha, sigma


def snr(schedule: Schedule, t: Tensor) -> Tensor:
    return torch.exp(schedule.logsnr(t))


def schedule_from_dict(d: dict[str, Any]) -> Schedule:
    d = dict(d)
    name = d.pop("name")
    registry = {"cosine": CosineSchedule, "interpolated": InterpolatedSchedule}
    if name not in registry:
        raise ValueError(f"unknown schedule {name!r}; expected one of {sorted(registry)}")
    return registry[name](**d)


def time_grid(steps: int, t_max: float = 1.0, t_min: float = 0.0) -> Tensor:
    """Uniform descending grid t_max = t_0 > t_1 > … > t_steps = t_min, as a plain tensor."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(t_max, t_min, steps + 1, dtype=torch.float32)


# --- EDM/VE time u = σ/α (SPEC §7): z_t/α_t = x + u ε --------------------------------------------

def u_of_t(schedule: Schedule, t: Tensor | float) -> Tensor:
    """u_t = σ_t/α_t = exp(−λ_t/2); exactly 0 at t = 0 (the data, SPEC §1)."""
    t = torch.as_tensor(t, dtype=torch.float32)
    u = torch.exp(-0.5 * schedule.logsnr(t))
    return torch.where(t == 0, torch.zeros_like(u), u)


def u_range(schedule: Schedule) -> tuple[float, float]:
    """(u_min, u_max) = (exp(−λ(0)/2), exp(−λ(1)/2)): the clipped schedule's range of u."""
    lam = schedule.logsnr(torch.tensor([0.0, 1.0]))
    return math.exp(-0.5 * lam[0].item()), math.exp(-0.5 * lam[1].item())


def t_of_u(schedule: Schedule, u: Tensor | float) -> Tensor:
    """t = λ⁻¹(−2 log u), clamped to [0, 1]; exactly 0 for u ≤ u_min (u = 0 is the data itself)."""
    u = torch.as_tensor(u, dtype=torch.float32)
    t = schedule.t_from_logsnr(-2.0 * torch.log(u))
    return torch.where(u <= u_range(schedule)[0], torch.zeros_like(t), t)
