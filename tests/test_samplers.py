"""Samplers against the closed forms of Gaussian data (docs/math.md §3, §4, §6, §8)."""
from __future__ import annotations

import pytest
import torch

from fewstep.param import Prediction
from fewstep.samplers import (
    SAMPLERS,
    VarianceTable,
    addim,
    addim_step,
    ancestral,
    consistency,
    data_free_variance,
    ddim,
    ddim_step,
    heun,
    inv_ddim,
)
from fewstep.schedules import CosineSchedule, time_grid


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rel_error(out: torch.Tensor, exact: torch.Tensor, mu: torch.Tensor) -> float:
    """‖out − Φ‖ / ‖Φ − μ‖ (the spread around the mean, which μ would otherwise dilute)."""
    return ((out - exact).norm() / (exact - mu).norm()).item()


def ab(schedule, t, ref):
    alpha, sigma = schedule.alpha_sigma(torch.as_tensor(t, dtype=torch.float32).expand(ref.shape[0]))
    return alpha[:, None].double(), sigma[:, None].double()


class CallCounter:
    def __init__(self, denoiser):
        self.denoiser, self.schedule, self.calls = denoiser, denoiser.schedule, 0

    def __call__(self, z_t, t, cond=None) -> Prediction:
        self.calls += 1
        return self.denoiser(z_t, t, cond)


# --- DDIM, invDDIM (docs/math.md §3) -----------------------------------------------------------------

def test_ddim_converges_at_first_order(gaussian_denoiser):
    g = gaussian_denoiser
    z1 = torch.randn(64, 4, generator=gen(0), dtype=torch.float64)
    exact = g.flow_map(z1, 1.0, 0.0)  # Φ_{1→0} from the clipped schedule's t = 1 to the data
    errors = [rel_error(ddim(g, z1, time_grid(n)), exact, g.mu) for n in (64, 128, 256, 512)]
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(1.7 < r < 2.3 for r in ratios), (errors, ratios)
    assert errors[-1] < 1e-2, errors  # docs/math.md §8: ~0.3% at 512 steps


def test_heun_converges_faster_than_ddim(gaussian_denoiser):
    g = gaussian_denoiser
    z1 = torch.randn(64, 4, generator=gen(1), dtype=torch.float64)
    exact = g.flow_map(z1, 1.0, 0.0)
    err_ddim = {n: rel_error(ddim(g, z1, time_grid(n)), exact, g.mu) for n in (32, 64)}
    err_heun = {n: rel_error(heun(g, z1, time_grid(n)), exact, g.mu) for n in (32, 64)}
    assert err_heun[32] < err_ddim[32], (err_heun, err_ddim)
    assert err_heun[64] < err_ddim[64], (err_heun, err_ddim)
    assert err_heun[32] / err_heun[64] > 3.0, err_heun  # better than first order


def test_ddim_one_step_returns_x_hat_at_1(gaussian_denoiser):
    z1 = torch.randn(16, 4, generator=gen(2), dtype=torch.float64)
    out = ddim(gaussian_denoiser, z1, time_grid(1))
    assert torch.equal(out, gaussian_denoiser(z1, torch.tensor(1.0)).x_hat)


def test_ddim_step_to_zero_returns_x_hat():
    schedule = CosineSchedule()
    z_t, x_hat = torch.randn(2, 8, 3, generator=gen(3))
    t = torch.rand(8, generator=gen(4)) * 0.98 + 0.01
    assert torch.equal(ddim_step(schedule, x_hat, z_t, t, torch.zeros(8)), x_hat)


def test_ddim_step_matches_spec_formula():
    schedule = CosineSchedule()
    z_t, x_hat = torch.randn(2, 8, 5, generator=gen(5), dtype=torch.float64)
    t = torch.rand(8, generator=gen(6)) * 0.9 + 0.1
    s = t * torch.rand(8, generator=gen(7))
    (a_t, s_t), (a_s, s_s) = ab(schedule, t, z_t), ab(schedule, s, z_t)
    expected = a_s * x_hat + (s_s / s_t) * (z_t - a_t * x_hat)
    # The schedule is fp32 (docs/math.md §1); σ_s/σ_t is formed in fp32 inside ddim_step.
    assert torch.allclose(ddim_step(schedule, x_hat, z_t, t, s), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("gap", [1e-3, 1e-2, 0.1, "to_zero"])
def test_inv_ddim_inverts_ddim(gap, dtype):
    schedule = CosineSchedule()
    x, z_t = torch.randn(2, 256, 6, generator=gen(8), dtype=dtype)
    t = torch.rand(256, generator=gen(9)) * 0.99 + 0.01
    s = torch.zeros(256) if gap == "to_zero" else (t - gap).clamp_min(0.0)
    z_s = ddim_step(schedule, x, z_t, t, s)
    back = inv_ddim(schedule, z_s, z_t, t, s)
    # invDDIM divides by c = α_s − α_t σ_s/σ_t, computed from the fp32 schedule (docs/math.md §1), so the
    # round trip is exact up to ~fp32 rounding / c (c ≈ 1.6e-3 for a 1/1000 step).
    (a_t, s_t), (a_s, s_s) = ab(schedule, t, x), ab(schedule, s, x)
    c = a_s - a_t * s_s / s_t  # [B, 1]
    err = (back - x).abs().double()
    assert (err * c < 2e-6).all(), (err * c).max()
    if gap == "to_zero":
        assert torch.equal(back, z_s)  # c = 1, σ_0 = 0: invDDIM to 0 is the identity on z_0 = x


# --- aDDIM (docs/math.md §4) -------------------------------------------------------------------------

def test_addim_norm_identity_one_step():
    # ‖z_s − α_s x̂‖² = σ_s²‖ε̂‖² + d·c²·v_t, exactly, per example.
    schedule = CosineSchedule()
    b, d = 16, 7
    x_hat, z_t = torch.randn(2, b, d, generator=gen(11), dtype=torch.float64)
    t = torch.rand(b, generator=gen(12)) * 0.98 + 0.02
    s = t * torch.rand(b, generator=gen(13))
    s[:3] = 0.0  # the last step, c = 1
    v_t = torch.rand(b, generator=gen(14), dtype=torch.float64)
    z_s = addim_step(schedule, x_hat, z_t, t, s, v_t)
    (a_t, s_t), (a_s, s_s) = ab(schedule, t, z_t), ab(schedule, s, z_t)
    eps_hat = (z_t - a_t * x_hat) / s_t
    c = a_s - a_t * s_s / s_t
    lhs = (z_s - a_s * x_hat).pow(2).sum(1)
    rhs = s_s[:, 0] ** 2 * eps_hat.pow(2).sum(1) + d * c[:, 0] ** 2 * v_t
    assert torch.allclose(lhs, rhs, rtol=1e-5, atol=0)  # c is formed from the fp32 schedule
    # And it moves along ε̂ only: z_s − α_s x̂ is parallel to ε̂.
    cos = torch.nn.functional.cosine_similarity(z_s - a_s * x_hat, eps_hat, dim=1)
    assert torch.allclose(cos, torch.ones(b, dtype=torch.float64), atol=1e-10)


@pytest.mark.parametrize("t, s", [(0.6, 0.5), (0.9, 0.3), (0.2, 0.0)])
def test_addim_restores_missing_norm_monte_carlo(gaussian_denoiser, t, s):
    # E_{x|z_t}‖z*_s‖² − ‖z_s^DDIM‖² = c²·tr Var[x|z_t], z*_s = DDIM_{t→s}(x, z_t) with the true x.
    g, schedule, d, n = gaussian_denoiser, gaussian_denoiser.schedule, 4, 200_000
    x0 = g.mu + g.std * torch.randn(1, d, generator=gen(20), dtype=torch.float64)
    (a_t, s_t), (a_s, s_s) = ab(schedule, t, x0), ab(schedule, s, x0)
    z_t = a_t * x0 + s_t * torch.randn(1, d, generator=gen(21), dtype=torch.float64)
    pred = g(z_t, t)
    var = g.posterior_var(t, z_t)                                    # [1, 1], per dimension
    x = pred.x_hat + var.sqrt() * torch.randn(n, d, generator=gen(22), dtype=torch.float64)  # x | z_t
    z_star = ddim_step(schedule, x, z_t.expand(n, d), t, s)          # [n, d]
    z_ddim = ddim_step(schedule, pred.x_hat, z_t, t, s)              # [1, d]
    c = (a_s - a_t * s_s / s_t).item()
    gap = z_star.pow(2).sum(1) - z_ddim.pow(2).sum()
    expected = c**2 * d * var.item()
    se = gap.std().item() / n**0.5
    assert abs(gap.mean().item() - expected) < 5 * se + 1e-12, (gap.mean().item(), expected, se)
    # aDDIM with the true v_t reproduces the expected squared distance from α_s x̂ (docs/math.md §4).
    z_addim = addim_step(schedule, pred.x_hat, z_t, t, s, var[:, 0])
    dist_star = (z_star - a_s * pred.x_hat).pow(2).sum(1)
    dist_addim = (z_addim - a_s * pred.x_hat).pow(2).sum().item()
    assert abs(dist_star.mean().item() - dist_addim) < 5 * dist_star.std().item() / n**0.5


def test_addim_step_with_zero_variance_is_ddim():
    schedule = CosineSchedule()
    x_hat, z_t = torch.randn(2, 16, 5, generator=gen(30))
    t = torch.rand(16, generator=gen(31)) * 0.98 + 0.02
    s = t * torch.rand(16, generator=gen(32))
    s[0] = 0.0
    out = addim_step(schedule, x_hat, z_t, t, s, torch.zeros(16))
    assert torch.allclose(out, ddim_step(schedule, x_hat, z_t, t, s), rtol=1e-5, atol=1e-6)


def test_addim_sampler_with_zero_variance_is_ddim(gaussian_denoiser):
    z1 = torch.randn(32, 4, generator=gen(33), dtype=torch.float64)
    ts = time_grid(8)
    zeros = lambda t, x_hat, z: torch.zeros_like(t)  # noqa: E731
    out = addim(gaussian_denoiser, z1, ts, variance=zeros)
    assert torch.allclose(out, ddim(gaussian_denoiser, z1, ts), rtol=1e-6, atol=1e-6)
    # A positive variance does change the result (the comparison above can fail).
    out_v = addim(gaussian_denoiser, z1, ts, variance=data_free_variance(gaussian_denoiser.schedule))
    assert not torch.allclose(out_v, out, atol=1e-3)


def test_addim_final_x_hat_flag(gaussian_denoiser):
    z1 = torch.randn(8, 4, generator=gen(34), dtype=torch.float64)
    ts = time_grid(3)
    out = addim(gaussian_denoiser, z1, ts, final="x_hat")
    z = z1
    var = data_free_variance(gaussian_denoiser.schedule)
    for t, s in zip(ts[:-2], ts[1:-1]):
        tb = t.expand(8)
        x_hat = gaussian_denoiser(z, tb).x_hat
        z = addim_step(gaussian_denoiser.schedule, x_hat, z, tb, s.expand(8), var(tb, x_hat, z))
    assert torch.allclose(out, gaussian_denoiser(z, ts[-2]).x_hat, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="final"):
        addim(gaussian_denoiser, z1, ts, final="nope")


# --- stochastic and other samplers -----------------------------------------------------------

def test_ancestral_matches_data_moments(gaussian_denoiser):
    g, n, d, steps = gaussian_denoiser, 16_000, 4, 512
    z1 = torch.randn(n, d, generator=gen(40))
    x = ancestral(g, z1, time_grid(steps), generator=gen(41)).double()
    mean_se = g.std / n**0.5
    assert torch.allclose(x.mean(0), g.mu, atol=5 * mean_se, rtol=0), x.mean(0) - g.mu
    # Pooled over dimensions: s.e. of the variance ratio is √(2/(n d)). DDPM's posterior-variance
    # choice also misses O(1/steps) of the variance (measured: −3% at 256 steps, −1.2% at 512).
    ratio = x.var(0).mean().item() / g.std**2
    assert abs(ratio - 1) < 5 * (2 / (n * d)) ** 0.5 + 8 / steps, ratio
    per_dim = x.var(0) / g.std**2
    assert (per_dim - 1).abs().max() < 5 * (2 / n) ** 0.5 + 8 / steps, per_dim


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_are_deterministic_given_generator(gaussian_denoiser, name):
    entry = SAMPLERS.get(name)
    sampler = entry.fn
    z1 = torch.randn(16, 4, generator=gen(50), dtype=torch.float64)
    ts = time_grid(min(6, entry.max_steps or 6))
    a = sampler(gaussian_denoiser, z1.clone(), ts, generator=gen(51))
    b = sampler(gaussian_denoiser, z1.clone(), ts, generator=gen(51))
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()
    c = sampler(gaussian_denoiser, z1.clone(), ts, generator=gen(52))
    if name in ("ancestral", "ect"):
        assert not torch.allclose(a, c)  # the generator is really used
    else:
        assert torch.equal(a, c)  # deterministic samplers ignore it


def test_consistency_makes_s_calls_and_equals_ddim(gaussian_denoiser):
    z1 = torch.randn(16, 4, generator=gen(60), dtype=torch.float64)
    for steps in (1, 2, 4, 7):
        counter = CallCounter(gaussian_denoiser)
        out = consistency(counter, z1, time_grid(steps))
        assert counter.calls == steps
        assert torch.equal(out, ddim(gaussian_denoiser, z1, time_grid(steps)))


# --- v_t choices (docs/math.md §4 b, c) ----------------------------------------------------------------

def test_variance_table_measure_matches_posterior_variance(gaussian_denoiser):
    g, n, d, eta = gaussian_denoiser, 8000, 4, 0.75
    x = g.mu + g.std * torch.randn(n, d, generator=gen(70), dtype=torch.float64)
    table = VarianceTable.measure(g, x, eta=eta, points=4, generator=gen(71))
    assert torch.allclose(table.ts, torch.tensor([0.25, 0.5, 0.75, 1.0]))
    # η·E‖x − E[x|z_t]‖²/d = η·tr Var[x|z_t]/d; a mean of n·d squared Gaussians (rel. s.e. √(2/(nd))).
    expected = torch.stack([eta * g.posterior_var(t, x[:1])[0, 0] for t in table.ts]).float()
    assert torch.allclose(table.values, expected, rtol=5 * (2 / (n * d)) ** 0.5, atol=0), (table.values, expected)


def test_variance_table_interpolates_and_round_trips():
    table = VarianceTable(torch.tensor([0.1, 0.4, 0.7, 1.0]), torch.tensor([0.3, 0.2, 0.05, 0.01]))
    dummy = torch.zeros(4, 2)
    assert torch.equal(table(table.ts, dummy, dummy), table.values)  # hits the table points exactly
    mids = (table.ts[:-1] + table.ts[1:]) / 2
    assert torch.allclose(table(mids, dummy[:3], dummy[:3]), (table.values[:-1] + table.values[1:]) / 2)
    ends = table(torch.tensor([0.0, 0.05, 1.0]), dummy[:3], dummy[:3])
    assert torch.allclose(ends, torch.tensor([0.3, 0.3, 0.01]))  # held constant outside the grid
    back = VarianceTable.from_dict(table.to_dict())
    assert torch.equal(back.ts, table.ts) and torch.equal(back.values, table.values)


def test_data_free_variance_closed_form():
    schedule = CosineSchedule()
    t = torch.linspace(0.01, 1.0, 50)
    alpha, sigma = schedule.alpha_sigma(t)
    snr = alpha.double() ** 2 / sigma.double() ** 2
    v = data_free_variance(schedule)(t, torch.zeros(50, 2), torch.zeros(50, 2))
    assert v.shape == (50,)
    assert torch.allclose(v.double(), 0.1 / (2.0 + snr), rtol=1e-4, atol=0)
    # 10% of Var[x|z_t] under a N(0, 0.5) prior: s²σ²/(α²s² + σ²) with s² = 0.5.
    post = 0.5 * sigma.double() ** 2 / (0.5 * alpha.double() ** 2 + sigma.double() ** 2)
    assert torch.allclose(v.double(), 0.1 * post, rtol=1e-4, atol=0)


class _ClassMean:
    """x̂ = the mean of the example's class (``cond["class"]``), whatever z_t is: its error is exact."""

    def __init__(self, schedule, means: torch.Tensor) -> None:
        self.schedule, self.means = schedule, means

    def __call__(self, z_t, t, cond=None):
        x_hat = self.means[cond["class"]] if cond is not None else torch.zeros_like(z_t)
        return Prediction(x_hat, torch.zeros_like(z_t))


def test_variance_table_is_eta_times_the_exact_mean_squared_error_with_conditions():
    """v_t = η·Σ‖x − x̂‖²/(N·d) exactly, with x̂ independent of the noise; batches smaller than N and a
    condition per example (sliced with its batch)."""
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5], [-2.0, 1.0], [4.0, 0.0]])
    labels = torch.tensor([0, 1, 0, 1, 1])
    means = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    d = _ClassMean(CosineSchedule(), means)
    table = VarianceTable.measure(d, x, eta=0.5, points=3, cond={"class": labels}, batch=2)
    expected = 0.5 * (x - means[labels]).square().sum() / x.numel()
    assert torch.allclose(table.values, expected.expand(3))
    unconditional = VarianceTable.measure(d, x, eta=0.5, points=3, batch=2)
    assert torch.allclose(unconditional.values, (0.5 * x.square().mean()).expand(3))


@pytest.mark.parametrize("prediction", ["v", "eps", "x"])
def test_each_parameterisation_recovers_x_and_eps_from_a_perfect_backbone(prediction):
    """docs/math.md §2: a backbone that outputs the true v, ε or x gives x̂ = x and ε̂ = ε exactly."""
    from fewstep.param import Denoiser

    g = torch.Generator().manual_seed(3)
    x, eps = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    t = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.8, 0.95])
    schedule = CosineSchedule()
    alpha, sigma = (a[:, None] for a in schedule.alpha_sigma(t))
    target = {"v": alpha * eps - sigma * x, "eps": eps, "x": x}[prediction]

    class Oracle(torch.nn.Module):
        def forward(self, z, t, cond=None):
            return target

    pred = Denoiser(Oracle(), schedule, prediction=prediction)(alpha * x + sigma * eps, t)
    assert torch.allclose(pred.x_hat, x, atol=1e-5) and torch.allclose(pred.eps_hat, eps, atol=1e-4)


def test_addim_eta_rescales_the_named_variance(gaussian_denoiser):
    """η replaces the choice's own fraction: the table's measured η (0.75) or the data-free 0.1; η = 0 is DDIM."""
    from fewstep.samplers import resolve_variance

    g = gaussian_denoiser
    z1 = torch.randn(32, 4, generator=gen(50), dtype=torch.float64)
    ts = time_grid(4)
    assert torch.allclose(addim(g, z1, ts, variance="data_free", eta=0.0), ddim(g, z1, ts), rtol=1e-6, atol=1e-6)
    table = VarianceTable(torch.tensor([0.5, 1.0]), torch.tensor([0.3, 0.6]), eta=0.75)
    t = torch.tensor([0.75])
    assert torch.allclose(resolve_variance("table", g.schedule, table, 0.25)(t, None, None), torch.tensor([0.45 / 3]))
    assert torch.allclose(resolve_variance("data_free", g.schedule, None, 0.2)(t, None, None),
                          2 * data_free_variance(g.schedule)(t, None, None))
    assert VarianceTable.from_dict(table.with_eta(0.5).to_dict()).eta == 0.5
