"""The training-free solvers (docs/math.md §11): parity with diffusers' schedulers, their relation to
DDIM, their orders of convergence on Gaussian data, and the time grids they run on."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import GaussianDenoiser
from fewstep.param import Denoiser
from fewstep.samplers import SAMPLERS, ddim, dpmpp2m, heun, parse_sampler, unipc
from fewstep.schedules import GRIDS, CosineSchedule, make_grid, u_of_t
from fewstep.schedules.grids import EDM_U_MAX, EDM_U_MIN
from test_diffusers_parity import Smooth, gen

T = 1000
SOLVERS = {"dpmpp2m": dpmpp2m, "unipc": unipc}


def log_slope(ns, errors) -> float:
    """The least-squares slope of −log error against log N."""
    return -float(np.polyfit(np.log(ns), np.log(errors), 1)[0])


# --- parity with diffusers ---------------------------------------------------------------------------

def diffusers_scheduler(name: str, steps: int, schedule):
    """diffusers' reference for ``name`` on our schedule (SPEC/math.md §11): trained_betas from our ᾱ,
    prediction_type="sample" (we feed x̂), trailing spacing, and float64 ᾱ and σ in place of float32."""
    diffusers = pytest.importorskip("diffusers")
    t_all = torch.arange(1, T + 1, dtype=torch.float32) / T
    abar = torch.sigmoid(schedule.logsnr(t_all).double())
    betas = torch.cat([1 - abar[:1], 1 - abar[1:] / abar[:-1]])
    common = dict(num_train_timesteps=T, trained_betas=betas.numpy(), prediction_type="sample", solver_order=2,
                  timestep_spacing="trailing", final_sigmas_type="zero", lower_order_final=True)
    if name == "dpmpp2m":
        sched = diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", **common)
    else:
        sched = diffusers.UniPCMultistepScheduler(solver_type="bh2", predict_x0=True, **common)
    sched.alphas_cumprod = abar.clone()
    sched.alpha_t, sched.sigma_t = abar.sqrt(), (1 - abar).sqrt()
    sched.lambda_t = torch.log(sched.alpha_t) - torch.log(sched.sigma_t)
    sched.set_timesteps(steps)
    sigmas = ((1 - abar[sched.timesteps]) / abar[sched.timesteps]).sqrt()
    sched.sigmas = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])  # float64, as the override above
    return sched, t_all


@pytest.mark.parametrize("steps", [3, 7, 10, 25])
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_solver_chain_matches_diffusers(name, steps):
    schedule = CosineSchedule()
    sched, t_all = diffusers_scheduler(name, steps, schedule)
    denoiser = Denoiser(Smooth(6), schedule, "x")  # the backbone's output is x̂ itself
    z = torch.randn(16, 6, generator=gen(5), dtype=torch.float64)

    sample = z
    for timestep in sched.timesteps.tolist():
        t = t_all[timestep].expand(len(z))
        sample = sched.step(denoiser(sample.float(), t).x_hat.double(), timestep, sample).prev_sample

    ts = torch.cat([t_all[sched.timesteps], torch.zeros(1)])  # diffusers' trailing grid, index i ↔ t = (i + 1)/T
    ours = SOLVERS[name](denoiser, z.float(), ts)
    err = (ours.double() - sample).abs().max() / sample.abs().max()
    assert err < 1e-5, err.item()


# --- relation to DDIM ---------------------------------------------------------------------------------

class Recorder:
    """A denoiser that records the states it is called at."""

    def __init__(self, denoiser) -> None:
        self.denoiser, self.schedule, self.states = denoiser, denoiser.schedule, []

    def __call__(self, z_t, t, cond=None):
        self.states.append(z_t.clone())
        return self.denoiser(z_t, t, cond)


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_first_step_is_ddim_and_two_steps_are_ddim(name, grid):
    schedule = CosineSchedule()
    denoiser = Denoiser(Smooth(5), schedule, "v")
    z = torch.randn(8, 5, generator=gen(6))
    for steps in (1, 2, 6):
        ts = make_grid(schedule, steps, grid)
        ours, reference = Recorder(denoiser), Recorder(denoiser)
        out, out_ddim = SOLVERS[name](ours, z, ts), ddim(reference, z, ts)
        assert len(ours.states) == steps  # one call per interval
        if steps > 1:  # the second evaluation is at DDIM's first step
            assert torch.equal(ours.states[1], reference.states[1])
        if steps <= 2:
            assert torch.equal(out, out_ddim)
        else:
            assert not torch.allclose(out, out_ddim, atol=1e-4)


def test_unipc_corrects_with_the_new_evaluation():
    """UniPC's predictor is DPM-Solver++(2M); from the third evaluation on, it is taken at corrected states."""
    schedule = CosineSchedule()
    denoiser = Denoiser(Smooth(5), schedule, "v")
    z = torch.randn(8, 5, generator=gen(7))
    ts = make_grid(schedule, 5, "t")
    uni, dpm = Recorder(denoiser), Recorder(denoiser)
    unipc(uni, z, ts), dpmpp2m(dpm, z, ts)
    assert torch.equal(uni.states[1], dpm.states[1])
    assert not torch.allclose(uni.states[2], dpm.states[2], atol=1e-5)


# --- orders of convergence on 1-D Gaussian data (math.md §8, §11) --------------------------------

@pytest.fixture(scope="module")
def gaussian_1d():
    g = GaussianDenoiser(CosineSchedule(), torch.tensor([0.7], dtype=torch.float64), 0.3)
    return g, torch.randn(2048, 1, generator=gen(8), dtype=torch.float64)


def rms_errors(g, z, sampler, grid, ns):
    errors = []
    for n in ns:
        ts = make_grid(g.schedule, n, grid)
        errors.append((sampler(g, z, ts) - g.flow_map(z, ts[0], 0.0)).pow(2).mean().sqrt().item())
    return errors


@pytest.mark.parametrize("name, low, high", [("ddim", 0.9, 1.1), ("dpmpp2m", 1.5, None), ("unipc", 1.8, None)])
def test_order_of_convergence_on_the_uniform_grid(gaussian_1d, name, low, high):
    g, z = gaussian_1d
    ns = (128, 256, 512)  # below N ≈ 100 the error changes sign on this grid
    errors = rms_errors(g, z, {"ddim": ddim, **SOLVERS}[name], "t", ns)
    slope = log_slope(ns, errors)
    assert slope >= low and (high is None or slope <= high), (errors, slope)


@pytest.mark.parametrize("name", ["dpmpp2m", "unipc", "heun"])
@pytest.mark.parametrize("grid", ["logsnr", "edm"])
def test_second_order_on_logsnr_and_edm_grids(gaussian_1d, name, grid):
    """diffusers rounds these grids to integer indices, so they are tested by convergence instead."""
    g, z = gaussian_1d
    ns = (32, 64, 128)
    errors = rms_errors(g, z, {"heun": heun, **SOLVERS}[name], grid, ns)
    ddim_errors = rms_errors(g, z, ddim, grid, ns)
    assert log_slope(ns, errors) >= 1.8, errors
    assert 0.9 <= log_slope(ns, ddim_errors) <= 1.1, ddim_errors
    assert errors[-1] < ddim_errors[-1] / 10


# --- grids --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("steps", [1, 2, 3, 8, 64])
def test_grids_descend_to_the_data(grid, steps):
    ts = make_grid(CosineSchedule(), steps, grid)
    assert ts.dtype == torch.float32 and len(ts) == steps + 1
    assert ts[-1].item() == 0.0 and ts[0].item() <= 1.0
    assert bool((ts[1:] < ts[:-1]).all()), ts


def test_logsnr_grid_is_uniform_in_logsnr():
    schedule = CosineSchedule()
    ts = make_grid(schedule, 8, "logsnr")
    lam = schedule.logsnr(ts[:-1]).double()
    steps = lam[1:] - lam[:-1]
    assert ts[0].item() == 1.0
    assert torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-4), steps


def test_edm_grid_follows_rho_7_in_u_between_its_caps():
    schedule = CosineSchedule()
    ts = make_grid(schedule, 6, "edm")
    u = u_of_t(schedule, ts[:-1]).double()
    assert u[0].item() == pytest.approx(EDM_U_MAX, rel=1e-4) and u[-1].item() == pytest.approx(EDM_U_MIN, rel=1e-4)
    root = u ** (1 / 7)
    assert torch.allclose(root[1:] - root[:-1], (root[1] - root[0]).expand(5), rtol=1e-3)


def test_sampler_specs_choose_grids():
    assert parse_sampler("dpmpp2m").grid == parse_sampler("dpmpp2m:t").grid == "t"
    assert parse_sampler("unipc:logsnr").grid == "logsnr" and parse_sampler("unipc").grid == "t"
    assert parse_sampler("heun").grid == "edm" and parse_sampler("ddim").grid == "t"
    assert parse_sampler("consistency").grid == "t"
    for name in ("dpmpp2m", "unipc"):
        assert SAMPLERS.get(name).nfe(8) == 8
    assert math.isclose(float(make_grid(CosineSchedule(), 2, "t")[1]), 0.5)
