"""The `Schedule` contract of the variance-preserving process and what every schedule shares
(docs/math.md §1).

Notation (math.md → code):
    t ∈ [0, 1]   ``t``        time, 0 = data, 1 = (almost) pure noise
    λ_t          ``logsnr``   log(α_t² / σ_t²)
    α_t, σ_t     ``alpha``, ``sigma``   with α² + σ² = 1
    u_t          ``u``        σ_t/α_t = exp(−λ_t/2), the EDM/VE noise level (math.md §7)

A schedule is stateless: λ(t) and its inverse are closed forms (or a table), and α, σ follow from λ.
At t = 0 ``alpha_sigma`` returns α = 1, σ = 0 exactly (the data itself), while ``logsnr`` stays
clipped so that a network input is always finite. A new schedule is one class with
``@SCHEDULES.register(name)`` in its own module, imported by ``fewstep.schedules``.
"""
from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..registry import Registry

LOGSNR_MIN = -15.0
LOGSNR_MAX = 15.0


@runtime_checkable
class Schedule(Protocol):
    """λ(t), its inverse on [λ(1), λ(0)], α and σ, and a JSON form that ``schedule_from_dict`` reads."""

    def logsnr(self, t: Tensor) -> Tensor: ...

    def t_from_logsnr(self, logsnr: Tensor) -> Tensor: ...

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]: ...

    def to_dict(self) -> dict[str, Any]: ...


SCHEDULES: Registry[type] = Registry("schedule")


def alpha_sigma_from_logsnr(logsnr: Tensor, t: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """α = sqrt(sigmoid(λ)), σ = sqrt(sigmoid(−λ)); exactly (1, 0) where t == 0 (math.md §1)."""
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
    """The schedule a ``to_dict`` describes: ``{"name": <registered name>, **constructor arguments}``."""
    d = dict(d)
    return SCHEDULES.get(d.pop("name"), arg="schedule")(**d)


def logsnr_range(schedule: Schedule) -> tuple[float, float]:
    """(λ(1), λ(0)): the clipped schedule's log-SNR at the noise and at the data end."""
    lam = schedule.logsnr(torch.tensor([1.0, 0.0]))
    return float(lam[0]), float(lam[1])


def table_steps(schedule: Schedule) -> int | None:
    """T of a schedule tabulated at t_i = (i + 1)/T (docs/math.md §12), None for a closed form. Below
    t_0 = 1/T such a schedule resolves no time: objectives draw t ≥ t_0 and MCM's N is at most T."""
    return getattr(schedule, "steps", None)


def t_min(schedule: Schedule) -> float:
    """The smallest time the schedule tells apart: t_0 = 1/T for a table, 0 for a closed form."""
    steps = table_steps(schedule)
    return 0.0 if steps is None else 1.0 / steps


def describe(schedule: Schedule) -> str:
    """``to_dict`` for a message: a table's values are counted, not listed."""
    return str({k: f"<{len(v)} values>" if isinstance(v, list) and len(v) > 8 else v for k, v in schedule.to_dict().items()})


def time_grid(steps: int, t_max: float = 1.0, t_min: float = 0.0) -> Tensor:
    """Uniform descending grid t_max = t_0 > t_1 > … > t_steps = t_min, as a plain tensor."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(t_max, t_min, steps + 1, dtype=torch.float32)


# --- EDM/VE time u = σ/α (math.md §7): z_t/α_t = x + u ε -------------------------------------------

def u_of_t(schedule: Schedule, t: Tensor | float) -> Tensor:
    """u_t = σ_t/α_t = exp(−λ_t/2); exactly 0 at t = 0 (the data, math.md §1)."""
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
