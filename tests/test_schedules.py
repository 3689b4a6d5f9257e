"""Schedules (docs/math.md §1): closed forms, inverses, end points, round trips, time grids."""
from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fewstep.errors import UserError
from fewstep.schedules import (
    CosineSchedule,
    InterpolatedSchedule,
    alpha_sigma_from_logsnr,
    schedule_from_dict,
    snr,
    time_grid,
)

SCHEDULES = {
    "cosine": CosineSchedule(),
    "shifted": CosineSchedule(shift=2.0 * math.log(32 / 128)),
    "interpolated": InterpolatedSchedule(res=128),
}
ALL = pytest.mark.parametrize("schedule", list(SCHEDULES.values()), ids=list(SCHEDULES))
FAST = settings(max_examples=60, deadline=None)
times = st.floats(0.0, 1.0, allow_nan=False)


def logsnr_cos_f64(t: torch.Tensor, lmin: float = -15.0, lmax: float = 15.0) -> torch.Tensor:
    """λ_cos(t) = −2 log tan(a + t (b − a)) in float64 (docs/math.md §1), the reference."""
    a, b = math.atan(math.exp(-lmax / 2)), math.atan(math.exp(-lmin / 2))
    return -2.0 * torch.log(torch.tan(a + t.double() * (b - a)))


@ALL
@FAST
@given(t=times)
def test_alpha_sq_plus_sigma_sq_is_one(schedule, t):
    alpha, sigma = schedule.alpha_sigma(torch.tensor([t]))
    assert torch.allclose(alpha**2 + sigma**2, torch.ones(1), atol=1e-6)
    assert (alpha >= 0).all() and (sigma >= 0).all()


@ALL
@FAST
@given(t1=times, t2=times)
def test_logsnr_strictly_decreasing(schedule, t1, t2):
    if abs(t1 - t2) < 1e-3:
        t2 = min(1.0, t1 + 1e-3) if t1 < 0.5 else t1 - 1e-3
    lo, hi = min(t1, t2), max(t1, t2)
    lam = schedule.logsnr(torch.tensor([lo, hi]))
    assert lam[0] > lam[1]


@ALL
def test_logsnr_decreasing_on_dense_grid(schedule):
    lam = schedule.logsnr(torch.linspace(0.0, 1.0, 10_001))
    assert (lam.diff() < 0).all()


def test_cosine_matches_closed_form_and_end_points():
    schedule = CosineSchedule()
    t = torch.linspace(0.0, 1.0, 2001)
    # float32 near the pole of tan at t = 1 costs ~2e-4 in λ; elsewhere far less.
    assert torch.allclose(schedule.logsnr(t).double(), logsnr_cos_f64(t), atol=5e-4, rtol=0)
    ends = schedule.logsnr(torch.tensor([0.0, 1.0]))
    assert ends[0].item() == pytest.approx(15.0, abs=1e-4)
    assert ends[1].item() == pytest.approx(-15.0, abs=1e-3)


def test_shifted_cosine_adds_two_log_ratio():
    n, res = 32, 128
    shift = 2.0 * math.log(n / res)
    t = torch.linspace(0.0, 1.0, 257)
    lam = CosineSchedule(shift=shift).logsnr(t).double()
    assert torch.allclose(lam, logsnr_cos_f64(t) + shift, atol=5e-4, rtol=0)


def test_interpolated_matches_spec_formula():
    sched = InterpolatedSchedule(res=128, n_lo=32, n_hi=256)
    t = torch.linspace(0.0, 1.0, 257)
    t64 = t.double()
    lam_lo = logsnr_cos_f64(t) + 2 * math.log(32 / 128)
    lam_hi = logsnr_cos_f64(t) + 2 * math.log(256 / 128)
    expected = t64 * lam_lo + (1 - t64) * lam_hi
    assert torch.allclose(sched.logsnr(t).double(), expected, atol=5e-4, rtol=0)


@ALL
@FAST
@given(t=times)
def test_t_from_logsnr_inverts_logsnr(schedule, t):
    tt = torch.tensor([t], dtype=torch.float32)
    back = schedule.t_from_logsnr(schedule.logsnr(tt))
    assert torch.allclose(back, tt, atol=1e-5, rtol=0)


@ALL
@FAST
@given(u=st.floats(0.0, 1.0))
def test_logsnr_inverts_t_from_logsnr(schedule, u):
    # A λ inside the schedule's range, mapped to t and back.
    lam_max, lam_min = schedule.logsnr(torch.tensor([0.0, 1.0])).tolist()
    lam = torch.tensor([lam_min + u * (lam_max - lam_min)])
    t = schedule.t_from_logsnr(lam)
    assert 0.0 <= t.item() <= 1.0
    # dλ/dt reaches ~6e3 at the ends, so compare in t-units of the slope.
    assert torch.allclose(schedule.logsnr(t), lam, atol=2e-3, rtol=1e-5)


@ALL
def test_alpha_sigma_exact_at_t0(schedule):
    alpha, sigma = schedule.alpha_sigma(torch.tensor([0.0, 0.5, 0.0]))
    assert alpha[0].item() == 1.0 and sigma[0].item() == 0.0
    assert alpha[2].item() == 1.0 and sigma[2].item() == 0.0
    assert 0.0 < sigma[1].item() < 1.0  # only t == 0 is special
    a0, s0 = schedule.alpha_sigma(torch.tensor(0.0))
    assert a0.item() == 1.0 and s0.item() == 0.0


def test_alpha_sigma_from_logsnr_without_t_is_the_clipped_schedule():
    lam = CosineSchedule().logsnr(torch.tensor([0.0]))
    alpha, sigma = alpha_sigma_from_logsnr(lam)
    assert 0.0 < sigma.item() < 1e-3  # σ_0 ≈ 5.5e-4 of the clipped schedule
    alpha, sigma = alpha_sigma_from_logsnr(lam, torch.tensor([0.0]))
    assert (alpha.item(), sigma.item()) == (1.0, 0.0)


@ALL
def test_finite_at_end_points(schedule):
    t = torch.tensor([0.0, 1.0])
    lam = schedule.logsnr(t)
    alpha, sigma = schedule.alpha_sigma(t)
    for x in (lam, alpha, sigma, snr(schedule, t), schedule.t_from_logsnr(lam)):
        assert torch.isfinite(x).all()
    assert sigma[1] > 0.999 and 0 < alpha[1] < 1e-2  # t = 1 uses the clipped λ_min, not α = 0
    assert torch.allclose(schedule.t_from_logsnr(lam), t, atol=1e-5)


@ALL
def test_schedule_dict_round_trip(schedule):
    d = json.loads(json.dumps(schedule.to_dict()))
    back = schedule_from_dict(d)
    assert back == schedule and type(back) is type(schedule)
    t = torch.linspace(0, 1, 11)
    assert torch.equal(back.logsnr(t), schedule.logsnr(t))


def test_schedule_from_dict_unknown_name():
    with pytest.raises(UserError, match="unknown schedule 'linear'; expected one of cosine, interpolated"):
        schedule_from_dict({"name": "linear"})


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(1, 2000))
def test_time_grid_shape_and_order(steps):
    ts = time_grid(steps)
    assert ts.shape == (steps + 1,) and ts.dtype == torch.float32
    assert ts[0].item() == 1.0 and ts[-1].item() == 0.0  # exact ends: s = 0 hits α_0 = 1, σ_0 = 0
    assert (ts.diff() < 0).all()
    assert torch.allclose(ts.diff(), torch.full((steps,), -1.0 / steps), atol=1e-6)


def test_time_grid_custom_range():
    ts = time_grid(4, t_max=0.8, t_min=0.2)
    assert torch.allclose(ts, torch.tensor([0.8, 0.65, 0.5, 0.35, 0.2]))


@pytest.mark.parametrize("steps", [0, -1, -10])
def test_time_grid_rejects_fewer_than_one_step(steps):
    with pytest.raises(ValueError, match="steps"):
        time_grid(steps)
