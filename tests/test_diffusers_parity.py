"""Parity of our DDIM with diffusers' DDIMScheduler (eta = 0) on the same (cosine) schedule.

Mapping: diffusers' training index i ∈ {0, …, T−1} is our time t_i = (i + 1)/T, with
ᾱ_i = α(t_i)² = sigmoid(λ(t_i)); its ``prev_timestep = timestep − T // num_inference_steps`` < 0 is
``set_alpha_to_one`` (ᾱ = 1), our s = 0 with α_0 = 1, σ_0 = 0 (docs/math.md §1).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fewstep.param import Denoiser
from fewstep.samplers import ddim, ddim_step
from fewstep.schedules import CosineSchedule

T = 1000
PREDICTIONS = {"v_prediction": "v", "epsilon": "eps"}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def setup():
    schedule = CosineSchedule()
    t_all = torch.arange(1, T + 1, dtype=torch.float32) / T            # [T], t_i = (i + 1)/T
    alphas_cumprod = torch.sigmoid(schedule.logsnr(t_all).double())    # [T], ᾱ_i in float64
    betas = torch.cat([1 - alphas_cumprod[:1], 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]])
    return schedule, t_all, alphas_cumprod, betas


def make_scheduler(betas, prediction_type, spacing, steps, alphas_cumprod=None):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(
        num_train_timesteps=T,
        trained_betas=betas.numpy(),
        clip_sample=False,
        thresholding=False,
        set_alpha_to_one=True,
        prediction_type=prediction_type,
        timestep_spacing=spacing,
    )
    if alphas_cumprod is not None:
        # diffusers keeps ᾱ in float32, where 1 − ᾱ loses ~0.5% near t = 0 (ᾱ ≈ 1 − 5e-6); give it
        # the exact float64 values so the comparison tests the step, not float32 storage.
        sched.alphas_cumprod = alphas_cumprod.clone()
        sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    sched.set_timesteps(steps)
    return sched


class Constant(nn.Module):
    """A backbone returning a fixed raw output, whatever its input."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out

    def forward(self, z, t, cond=None):
        return self.out


class Smooth(nn.Module):
    """A fixed smooth function of (z, t), so a whole sampling chain can be compared."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = torch.randn(d, d, generator=gen(0), dtype=torch.float64) / d**0.5

    def forward(self, z, t, cond=None):
        return torch.tanh(z @ self.w.to(z.dtype)) * (1 + t.to(z.dtype)[:, None])


def test_trained_betas_reproduce_our_schedule(setup):
    schedule, t_all, alphas_cumprod, betas = setup
    sched = make_scheduler(betas, "v_prediction", "trailing", 10)
    alpha, _ = schedule.alpha_sigma(t_all)
    assert torch.allclose(sched.alphas_cumprod.double(), alpha.double() ** 2, rtol=1e-5, atol=0)
    assert torch.allclose(sched.alphas_cumprod.double(), alphas_cumprod, rtol=1e-5, atol=0)


@pytest.mark.parametrize("spacing, steps", [("trailing", 10), ("leading", 50), ("linspace", 7)])
@pytest.mark.parametrize("prediction_type", sorted(PREDICTIONS))
def test_ddim_step_matches_diffusers(setup, prediction_type, spacing, steps):
    schedule, t_all, alphas_cumprod, betas = setup
    sched = make_scheduler(betas, prediction_type, spacing, steps, alphas_cumprod)
    g = gen(1)
    for timestep in sched.timesteps.tolist():
        prev = timestep - T // steps
        t = t_all[timestep]
        s = t_all[prev] if prev >= 0 else torch.tensor(0.0)
        # A realistic input: z_t = √ᾱ x + √(1−ᾱ) ε and a model output near its target.
        abar = alphas_cumprod[timestep]
        x0, eps, noise = torch.randn(3, 4, 3, 8, 8, generator=g, dtype=torch.float64)
        sample = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        target = eps if prediction_type == "epsilon" else abar.sqrt() * eps - (1 - abar).sqrt() * x0
        output = target + 0.1 * noise

        theirs = sched.step(output, timestep, sample, eta=0.0).prev_sample

        denoiser = Denoiser(Constant(output.float()), schedule, PREDICTIONS[prediction_type])
        z_t = sample.float()
        x_hat = denoiser(z_t, t).x_hat
        ours = ddim_step(schedule, x_hat, z_t, t, s)
        assert ours.dtype == torch.float32
        # Our side is fp32 (docs/math.md §1); compare relative to the size of the result.
        err = (ours.double() - theirs).abs().max() / theirs.abs().max()
        assert err < 2e-6, (timestep, prev, err.item())  # measured ≤ 2.4e-7; off-by-one t gives ≥ 6e-4
        if prev < 0:  # set_alpha_to_one: the last step returns x̂ itself
            assert torch.equal(ours, x_hat)


@pytest.mark.parametrize("prediction_type", sorted(PREDICTIONS))
def test_ddim_chain_matches_diffusers(setup, prediction_type):
    schedule, t_all, alphas_cumprod, betas = setup
    steps = 20
    sched = make_scheduler(betas, prediction_type, "trailing", steps, alphas_cumprod)
    backbone = Smooth(6)
    z = torch.randn(16, 6, generator=gen(2), dtype=torch.float64)

    sample = z
    for timestep in sched.timesteps.tolist():
        t = t_all[timestep].double().expand(len(z))
        sample = sched.step(backbone(sample, t), timestep, sample, eta=0.0).prev_sample

    ts = torch.cat([t_all[sched.timesteps], torch.zeros(1)])  # 1, 0.95, …, 0.05, 0
    assert ts[0].item() == 1.0
    ours = ddim(Denoiser(backbone, schedule, PREDICTIONS[prediction_type]), z.float(), ts)
    err = (ours.double() - sample).abs().max() / sample.abs().max()
    assert err < 1e-5, err.item()  # measured ≤ 5e-7 over 20 fp32 steps
