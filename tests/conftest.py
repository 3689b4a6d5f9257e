"""Shared fixtures: the exact denoiser of Gaussian data (SPEC §8)."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor

from fewstep.param import Prediction, batch_times, expand_like
from fewstep.schedules import CosineSchedule, Schedule

# Tests use small tensors; on a busy 2-core CPU, intra-op threads spin against each other and make
# some sampler loops ~50x slower (measured), so the suite runs single-threaded.
torch.set_num_threads(1)


class GaussianDenoiser:
    """Exact E[x | z_t] for x ~ N(μ, s² I) (SPEC §8), with the closed-form posterior and flow map."""

    def __init__(self, schedule: Schedule, mu: Tensor, std: float) -> None:
        self.schedule = schedule
        self.mu = mu      # [D]
        self.std = std    # s

    def _coef(self, t: Tensor | float, z: Tensor) -> tuple[Tensor, Tensor]:
        alpha, sigma = self.schedule.alpha_sigma(batch_times(t, z))
        return expand_like(alpha, z).to(z.dtype), expand_like(sigma, z).to(z.dtype)

    def __call__(self, z_t: Tensor, t: Tensor | float, cond: Tensor | None = None) -> Prediction:
        alpha, sigma = self._coef(t, z_t)
        mu = self.mu.to(z_t.dtype)
        # E[x | z_t] = μ + α s² (z_t − α μ)/(α² s² + σ²)
        x_hat = mu + alpha * self.std**2 * (z_t - alpha * mu) / (alpha**2 * self.std**2 + sigma**2)
        return Prediction(x_hat, (z_t - alpha * x_hat) / sigma)

    def posterior_var(self, t: Tensor | float, z: Tensor) -> Tensor:
        """Var[x | z_t] per dimension, broadcastable against z: s² σ²/(α² s² + σ²)."""
        alpha, sigma = self._coef(t, z)
        return self.std**2 * sigma**2 / (alpha**2 * self.std**2 + sigma**2)

    def flow_map(self, z_t: Tensor, t: Tensor | float, s: Tensor | float) -> Tensor:
        """Exact probability-flow map Φ_{t→s}(z_t)."""
        alpha_t, sigma_t = self._coef(t, z_t)
        alpha_s, sigma_s = self._coef(s, z_t)
        v_t = alpha_t**2 * self.std**2 + sigma_t**2
        v_s = alpha_s**2 * self.std**2 + sigma_s**2
        mu = self.mu.to(z_t.dtype)
        return alpha_s * mu + (v_s / v_t).sqrt() * (z_t - alpha_t * mu)


@pytest.fixture
def gaussian_denoiser() -> GaussianDenoiser:
    """d = 4, μ = (1, −0.5, 0.25, 2), s = 0.5, cosine schedule, float64 μ."""
    mu = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=torch.float64)
    return GaussianDenoiser(CosineSchedule(), mu, 0.5)
