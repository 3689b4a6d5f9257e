"""A discrete schedule of T steps (diffusers' betas) as a continuous one (docs/math.md §12).

Notation (math.md → code):
    β_i, ᾱ_i     ``betas``, ``alphas_cumprod``   ᾱ_i = Π_{j≤i}(1 − β_j), float64
    T, t_0       ``steps``, ``t_min``            index i is time t_i = (i + 1)/T, t_0 = 1/T
    λ_i          ``logsnr_table``                log ᾱ_i − log(1 − ᾱ_i)
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .base import SCHEDULES, alpha_sigma_from_logsnr

# A zero-terminal-SNR table ends at ᾱ = 0 (λ = −∞). λ = −40 stands for it: α = 2e-9, which no float32
# state α x + σ ε can tell from 0, and the interpolation below stays finite.
LOGSNR_FLOOR = -40.0


@SCHEDULES.register("tabulated")
class TabulatedSchedule:
    """λ linear in t between the grid points t_i = (i + 1)/T on [t_0, 1]; times in (0, t_0) are t_0, and
    t = 0 is the data (α = 1, σ = 0 exactly, math.md §1). Interpolation runs in float64, outputs are
    float32 like every schedule's, so α(t_i)² is ᾱ_i to float32 rounding when t_i is given in float64."""

    def __init__(self, betas: Sequence[float] | Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if len(betas) < 2 or not bool(torch.isfinite(betas).all()):
            raise ValueError("a tabulated schedule needs at least 2 finite betas")
        if not bool(((betas > 0) & (betas <= 1)).all()) or bool((betas[:-1] == 1).any()):
            raise ValueError("betas must lie in (0, 1], with 1 (zero terminal SNR) only at the last step")
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        logsnr = torch.log(self.alphas_cumprod) - torch.log1p(-self.alphas_cumprod)
        logsnr[-1] = logsnr[-1].clamp_min(LOGSNR_FLOOR)
        if not bool(torch.isfinite(logsnr).all()) or not bool((logsnr.diff() < 0).all()):
            raise ValueError("the betas give no strictly decreasing, finite log-SNR table (betas below float64 resolution?)")
        self.logsnr_table = logsnr
        self._on_device: dict[torch.device, Tensor] = {}

    @property
    def steps(self) -> int:
        return len(self.betas)

    @property
    def t_min(self) -> float:
        return 1.0 / self.steps

    def _table(self, device: torch.device) -> Tensor:
        if device not in self._on_device:
            self._on_device[device] = self.logsnr_table.to(device)
        return self._on_device[device]

    def _logsnr64(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        position = (t.double() * self.steps - 1.0).clamp(0.0, self.steps - 1.0)  # i + fraction; (0, t_0) → 0
        i = position.floor().clamp_max(self.steps - 2)
        table = self._table(position.device)
        lo, hi = table[i.long()], table[i.long() + 1]
        return lo + (position - i) * (hi - lo)

    def logsnr(self, t: Tensor) -> Tensor:
        return self._logsnr64(t).float()

    def t_from_logsnr(self, logsnr: Tensor) -> Tensor:
        """Inverse of ``logsnr`` on [λ(1), λ(t_0)], clamped to [t_0, 1] outside."""
        logsnr = torch.as_tensor(logsnr).double()
        table = self._table(logsnr.device)
        # The first grid point at or below λ; the time lies between it and the one before.
        j = torch.searchsorted(-table, -logsnr.contiguous()).clamp(1, self.steps - 1)
        lo, hi = table[j - 1], table[j]
        fraction = ((lo - logsnr) / (lo - hi)).clamp(0.0, 1.0)
        return ((j - 1 + fraction + 1.0) / self.steps).float()

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        alpha, sigma = alpha_sigma_from_logsnr(self._logsnr64(t), torch.as_tensor(t))
        return alpha.float(), sigma.float()

    def to_dict(self) -> dict[str, Any]:
        return {"name": "tabulated", "betas": self.betas.tolist()}

    def __repr__(self) -> str:
        return f"TabulatedSchedule(steps={self.steps})"
