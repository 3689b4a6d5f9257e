"""The cosine schedule in log-SNR, clipped and optionally shifted (docs/math.md §1)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from .base import LOGSNR_MAX, LOGSNR_MIN, SCHEDULES, alpha_sigma_from_logsnr


@SCHEDULES.register("cosine")
@dataclass(frozen=True)
class CosineSchedule:
    """Cosine schedule in log-SNR, clipped to [logsnr_min, logsnr_max], optionally shifted.

    λ(t) = −2 log tan(a + t (b − a)) + shift,  a = atan(exp(−λ_max/2)), b = atan(exp(−λ_min/2)).
    ``shift = 2 log(n / res)`` gives simple diffusion's shifted cosine (math.md §1); the clip range is
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
