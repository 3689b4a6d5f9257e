"""Simple diffusion's interpolated schedule between two shifted cosines (docs/math.md §1)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from .base import LOGSNR_MAX, LOGSNR_MIN, SCHEDULES, alpha_sigma_from_logsnr
from .cosine import CosineSchedule


@SCHEDULES.register("interpolated")
@dataclass(frozen=True)
class InterpolatedSchedule:
    """λ(t) = t·λ_shift(t; n_lo) + (1 − t)·λ_shift(t; n_hi) for images of side ``res`` (math.md §1)."""

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
