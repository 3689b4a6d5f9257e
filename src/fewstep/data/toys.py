"""2D toy distributions, generated deterministically, and the exact denoiser of ``gaussians8``."""
from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.datasets import make_moons, make_swiss_roll
from torch import Tensor

from ..cond import Cond
from ..param import Prediction, batch_times, expand_like
from ..schedules import Schedule

GAUSSIANS8_RADIUS = 2.0
GAUSSIANS8_STD = 0.1


def moons(n: int, rng: np.random.Generator) -> np.ndarray:
    x, _ = make_moons(n, noise=0.05, random_state=int(rng.integers(2**31)))
    return x


def swissroll(n: int, rng: np.random.Generator) -> np.ndarray:
    x, _ = make_swiss_roll(n, noise=0.25, random_state=int(rng.integers(2**31)))
    return x[:, [0, 2]] / 5.0


def checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    # 8 of the 16 unit squares of [−2, 2]², alternating like a chess board.
    col = rng.integers(0, 4, n)
    row = 2 * rng.integers(0, 2, n) + (col % 2)
    u = rng.random((n, 2))
    return np.stack([col + u[:, 0] - 2.0, row + u[:, 1] - 2.0], axis=1)


def gaussians8_means() -> np.ndarray:
    angles = 2 * math.pi * np.arange(8) / 8
    return GAUSSIANS8_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # [8, 2]


def gaussians8_labelled(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Points and, as their label, the index of the component each was drawn from."""
    labels = rng.integers(0, 8, n)
    return gaussians8_means()[labels] + GAUSSIANS8_STD * rng.standard_normal((n, 2)), labels


def gaussians8(n: int, rng: np.random.Generator) -> np.ndarray:
    return gaussians8_labelled(n, rng)[0]


def gaussians8_moments() -> tuple[np.ndarray, np.ndarray]:
    """Analytic mean and per-dimension std of the mixture (used to standardise it exactly)."""
    means = gaussians8_means()
    var = (means**2).mean(0) + GAUSSIANS8_STD**2
    return means.mean(0), np.sqrt(var)


TOYS = {"moons": moons, "swissroll": swissroll, "checkerboard": checkerboard, "gaussians8": gaussians8}


class GaussianMixtureDenoiser:
    """The exact E[x | z_t] (and E[x | z_t, component]) of an isotropic Gaussian mixture (docs/math.md §8,
    §10), usable as an ideal teacher.

    x ~ Σ_k w_k N(μ_k, s² I), z_t = α_t x + σ_t ε. With V = α_t² s² + σ_t² and
    m_k = μ_k + α_t s² (z_t − α_t μ_k)/V:  E[x|z_t] = Σ_k π_k m_k,  π_k ∝ w_k N(z_t; α_t μ_k, V I).
    """

    def __init__(self, schedule: Schedule, means: Tensor, std: float, weights: Tensor | None = None) -> None:
        self.schedule = schedule
        self.means = torch.as_tensor(means, dtype=torch.float32)  # [K, D]
        self.std = float(std)
        k = len(self.means)
        self.weights = torch.full((k,), 1.0 / k) if weights is None else torch.as_tensor(weights, dtype=torch.float32)

    def _posterior(self, z_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        t = batch_times(t, z_t)
        alpha, sigma = self.schedule.alpha_sigma(t)
        alpha, sigma = alpha[:, None, None], sigma[:, None, None]          # [B, 1, 1]
        mu = self.means.to(z_t.device)[None]                                # [1, K, D]
        var = alpha**2 * self.std**2 + sigma**2                             # V, [B, 1, 1]
        diff = z_t[:, None, :] - alpha * mu                                 # [B, K, D]
        logits = torch.log(self.weights.to(z_t.device))[None] - 0.5 * diff.pow(2).sum(-1) / var[..., 0]
        pi = torch.softmax(logits, dim=1)                                   # [B, K]
        m = mu + alpha * self.std**2 * diff / var                           # [B, K, D]
        return pi, m, var

    def __call__(self, z_t: Tensor, t: Tensor | float, cond: Cond | None = None) -> Prediction:
        """E[x | z_t], or with ``cond = {"class": y}`` E[x | z_t, y] = m_y: the component's posterior
        mean for y < K, the mixture's for the null class y = K (docs/math.md §10)."""
        t = batch_times(t, z_t)
        pi, m, _ = self._posterior(z_t, t)
        x_hat = (pi[..., None] * m).sum(1)
        if cond is not None and "class" in cond:
            y = cond["class"].to(z_t.device)
            k = len(self.means)
            one = m[torch.arange(len(z_t), device=z_t.device), y.clamp(max=k - 1)]
            x_hat = torch.where((y == k)[:, None], x_hat, one)
        alpha, sigma = (expand_like(a, z_t) for a in self.schedule.alpha_sigma(t))
        return Prediction(x_hat, (z_t - alpha * x_hat) / sigma)

    def posterior_variance(self, z_t: Tensor, t: Tensor | float) -> Tensor:
        """tr Var[x | z_t]/d, [B] (docs/math.md §8)."""
        t = batch_times(t, z_t)
        pi, m, var = self._posterior(z_t, t)
        alpha, sigma = self.schedule.alpha_sigma(t)
        d = z_t.shape[1]
        within = self.std**2 * sigma**2 / var[:, 0, 0]
        mean = (pi[..., None] * m).sum(1)
        between = ((pi * m.pow(2).sum(-1)).sum(1) - mean.pow(2).sum(-1)) / d
        return within + between

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self.means[idx] + self.std * torch.randn(n, self.means.shape[1], generator=generator)
