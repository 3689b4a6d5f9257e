"""The exact Gaussian-mixture denoiser (docs/math.md §8) against Monte-Carlo posteriors, and gaussians8's units."""
from __future__ import annotations

import pytest
import torch

from fewstep.data import GaussianMixtureDenoiser, ideal_denoiser, load_dataset
from fewstep.schedules import CosineSchedule

T_VALUES = [0.15, 0.4, 0.7, 0.95]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mc_posterior(x: torch.Tensor, z_t: torch.Tensor, alpha: float, sigma: float):
    """Self-normalised importance sampling of x | z_t from prior samples x [M, D]: w ∝ N(z_t; α x, σ² I).

    Returns the posterior mean [D], tr Var/d, and their standard errors (Σ w² (f − E f)²)^½."""
    x = x.double()
    logw = -0.5 * (z_t.double() - alpha * x).pow(2).sum(1) / sigma**2
    w = torch.softmax(logw, 0)                                  # [M]
    mean = (w[:, None] * x).sum(0)                              # [D]
    sq = (x - mean).pow(2).sum(1) / x.shape[1]                  # [M], ‖x − E x‖²/d
    var = (w * sq).sum()
    mean_se = (w[:, None] ** 2 * (x - mean) ** 2).sum(0).sqrt()
    var_se = (w**2 * (sq - var) ** 2).sum().sqrt()
    ess = 1.0 / w.pow(2).sum()
    return mean, var, mean_se, var_se, ess


def check_against_mc(denoiser, x_prior: torch.Tensor, z_points: torch.Tensor, t: float) -> None:
    alpha, sigma = (a.item() for a in denoiser.schedule.alpha_sigma(torch.tensor(t)))
    pred = denoiser(z_points, t)
    post_var = denoiser.posterior_variance(z_points, t)
    assert torch.allclose(pred.eps_hat, (z_points - alpha * pred.x_hat) / sigma, atol=1e-5)
    for i, z in enumerate(z_points):
        mean, var, mean_se, var_se, ess = mc_posterior(x_prior, z, alpha, sigma)
        assert ess > 200, f"too few effective samples ({ess:.0f}) at t={t}"
        err = (pred.x_hat[i].double() - mean).abs()
        assert (err <= 5 * mean_se + 1e-4).all(), (t, i, pred.x_hat[i], mean, mean_se)
        assert abs(post_var[i].item() - var.item()) <= 5 * var_se.item() + 1e-5, (t, i, post_var[i], var, var_se)


def sample_mixture(means: torch.Tensor, std: float, weights: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    g = gen(seed)
    idx = torch.multinomial(weights, n, replacement=True, generator=g)
    return means[idx].double() + std * torch.randn(n, means.shape[1], generator=g, dtype=torch.float64)


def probe_points(denoiser, means: torch.Tensor, t: float, seed: int) -> torch.Tensor:
    """A z_t drawn from the process, one halfway between two modes (a bimodal posterior), and one far out."""
    alpha, sigma = (a.item() for a in denoiser.schedule.alpha_sigma(torch.tensor(t)))
    g = gen(seed)
    x0 = means[0] + 0.1 * torch.randn(means.shape[1], generator=g)
    drawn = alpha * x0 + sigma * torch.randn(means.shape[1], generator=g)
    between = alpha * 0.5 * (means[0] + means[1])
    far = alpha * 1.5 * means[2]
    return torch.stack([drawn, between, far]).float()


@pytest.mark.parametrize("t", T_VALUES)
def test_mixture_denoiser_matches_monte_carlo(t):
    means = torch.tensor([[1.0, 0.0, -0.5], [-1.0, 0.5, 0.0], [0.0, -1.0, 1.0], [0.3, 0.3, 0.3]])
    weights = torch.tensor([0.4, 0.3, 0.2, 0.1])
    std = 0.3
    denoiser = GaussianMixtureDenoiser(CosineSchedule(), means, std, weights)
    x_prior = sample_mixture(means, std, weights, 200_000, seed=1)
    check_against_mc(denoiser, x_prior, probe_points(denoiser, means, t, seed=2), t)


@pytest.fixture(scope="module")
def gaussians8():
    return load_dataset("gaussians8")


@pytest.mark.parametrize("t", T_VALUES)
def test_ideal_denoiser_matches_monte_carlo_on_training_data(gaussians8, t):
    # The prior samples are the data set's own training points in model units, so this also checks
    # that the ideal denoiser uses the same standardisation as the data (docs/math.md §8).
    denoiser = ideal_denoiser(gaussians8, CosineSchedule())
    assert isinstance(denoiser, GaussianMixtureDenoiser)
    check_against_mc(denoiser, gaussians8.train, probe_points(denoiser, denoiser.means, t, seed=3), t)


def test_gaussians8_standardised_moments_match_ideal_denoiser(gaussians8):
    x = gaussians8.train.double()
    n = len(x)
    assert gaussians8.shape == (2,)
    # Mixture moments of the ideal denoiser, closed form: mean Σ w_k μ_k, variance Σ w_k μ_k² − mean² + s².
    den = ideal_denoiser(gaussians8, CosineSchedule())
    w, mu = den.weights.double(), den.means.double()
    mix_mean = (w[:, None] * mu).sum(0)
    mix_var = (w[:, None] * mu**2).sum(0) - mix_mean**2 + den.std**2
    assert torch.allclose(mix_mean, torch.zeros(2, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(mix_var, torch.ones(2, dtype=torch.float64), atol=1e-6)
    # The standardised data agree with those moments to sampling error (std 1: s.e. ≈ 1/√n, √(κ−1)/(2√n)).
    assert torch.allclose(x.mean(0), mix_mean, atol=5 / n**0.5, rtol=0), x.mean(0)
    assert torch.allclose(x.std(0), mix_var.sqrt(), atol=5 / n**0.5, rtol=0), x.std(0)
    # Per-mode: every training point lies near one of the denoiser's 8 means (same affine map).
    nearest = torch.cdist(x, mu).min(1).values
    assert (nearest < 6 * den.std).all(), nearest.max()
    counts = torch.bincount(torch.cdist(x, mu).argmin(1), minlength=8).double()
    assert torch.allclose(counts / n, w, atol=5 * (0.125 * 0.875 / n) ** 0.5)


def test_ideal_denoiser_only_for_gaussians8():
    assert ideal_denoiser(load_dataset("moons"), CosineSchedule()) is None
