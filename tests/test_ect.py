"""Easy Consistency Tuning (docs/math.md §7): u ↔ t, the curriculum r(u), u's redraws, the r = 0 limit, the
shared dropout mask, the 1-/2-step sampler, multistep ECT and a CLI smoke run."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import Spy, mlp_denoiser

from fewstep.runs.config import TrainConfig
from fewstep.data.dataset import Normaliser, make_dataset
from fewstep.errors import UserError
from fewstep.objectives import ECTObjective, MultistepECTObjective
from fewstep.runs.objective import make_objective
from fewstep.objectives.ect import default_huber_c, ect_loss, ect_r, ect_weight, sample_u, segment_r, stage_at
from fewstep.objectives.multistep import consistency_loss, consistency_target, pseudo_huber
from fewstep.param import Prediction, expand_like
from fewstep.samplers import SamplerSpec, ect
from fewstep.sampling import generate
from fewstep.schedules import CosineSchedule, InterpolatedSchedule, t_of_u, time_grid, u_of_t, u_range


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)







# --- u = σ/α ↔ t ------------------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", [CosineSchedule(), InterpolatedSchedule(64)], ids=["cosine", "interpolated"])
def test_u_t_round_trip(schedule):
    t = torch.linspace(0.01, 0.99, 99)
    u = u_of_t(schedule, t)
    alpha, sigma = schedule.alpha_sigma(t)
    assert torch.allclose(u, sigma / alpha, rtol=1e-5)         # u = σ/α = exp(−λ/2)
    assert torch.allclose(t_of_u(schedule, u), t, rtol=0, atol=2e-6)
    assert torch.allclose(u_of_t(schedule, t_of_u(schedule, u)), u, rtol=2e-5)
    # The ends: t = 0 is the data (u = 0 exactly), and u at or below the range maps to t = 0 exactly.
    u_lo, u_hi = u_range(schedule)
    assert u_of_t(schedule, 0.0).item() == 0.0
    assert t_of_u(schedule, torch.tensor([0.0, u_lo, u_lo / 2])).tolist() == [0.0, 0.0, 0.0]
    assert torch.allclose(t_of_u(schedule, u_hi), torch.tensor(1.0))
    if isinstance(schedule, CosineSchedule):
        # λ(1) is −15 in float32 arithmetic: within 1.2e-5, so u_max = exp(7.5) within 1e-5.
        assert u_lo == pytest.approx(math.exp(-7.5), rel=1e-5) and u_hi == pytest.approx(math.exp(7.5), rel=1e-5)


# --- the curriculum (docs/math.md §7 step 2) ----------------------------------------------------------------

def test_stage_schedule():
    # iters_per_stage = iters/8: 800 iterations → 100 per stage; 20 iterations → 2.5 per stage.
    assert [stage_at(i, 800, 8) for i in (0, 99, 100, 450, 799)] == [0, 0, 1, 4, 7]
    assert [stage_at(i, 20, 8) for i in (0, 2, 3, 5, 19)] == [0, 0, 1, 2, 7]
    assert max(stage_at(i, 37, 8) for i in range(37)) == 7


def test_r_matches_spec_at_chosen_points():
    """r = max(0, u·(1 − q^−(stage+1)·g(u))), g(u) = 1 + k·sigmoid(−b u), by hand:
    u=1, stage 0:   g = 1 + 8·0.26894142 = 3.15153137; 1 − g/2 < 0                 → r = 0
    u=4, stage 0:   g = 1 + 8·0.01798621 = 1.14388968; 4·(1 − g/2)                 → 1.71222064
    u=1, stage 3:   4·(1 − 3.15153137/16)/4 = 1 − 0.19697071                       → 0.80302929
    u=0.5, st 1, q=4: g = 1 + 8·0.37754067 = 4.02032537; 0.5·(1 − g/16)           → 0.37436483
    u=10, stage 7:  g = 1 + 8·4.5398e-5 = 1.00036318; 10·(1 − g/256)               → 9.96092331
    u=ln 7, stage 0: sigmoid(−ln 7) = 1/8, g = 2, 1 − g/2 = 0                        → 0 (the boundary)"""
    cases = [(1.0, 0, 2.0, 0.0), (4.0, 0, 2.0, 1.7122206406065352), (1.0, 3, 2.0, 0.8030292893150024),
             (0.5, 1, 4.0, 0.3743648328004636), (10.0, 7, 2.0, 9.960923313166031)]
    for u, stage, q, expected in cases:
        r = ect_r(torch.tensor([u], dtype=torch.float64), stage, q, 8.0, 1.0)
        assert r.item() == pytest.approx(expected, rel=1e-12, abs=1e-15), (u, stage, q)
    assert ect_r(torch.tensor([math.log(7.0)], dtype=torch.float64), 0, 2.0, 8.0, 1.0).item() == pytest.approx(0.0, abs=1e-15)
    # Early on r = 0 for small u (pure denoising); r → u as stages grow; r < u throughout.
    u = torch.logspace(-3, 3, 61, dtype=torch.float64)
    rs = torch.stack([ect_r(u, s, 2.0, 8.0, 1.0) for s in range(8)])
    assert (rs[0][u < math.log(7.0)] == 0).all() and (rs[0][u > 2.0] > 0).all()
    assert (rs[1:] >= rs[:-1]).all() and (rs < u).all()
    assert torch.allclose(ect_r(u, 40, 2.0, 8.0, 1.0), u, rtol=1e-10)


def test_multistep_r_matches_spec():
    """r = max(t_step, t − (t − t_step)·q^−(stage+1)·g(u_t)): t = 0.75, t_step = 0.5, u_t = 1, stage 1:
    0.75 − 0.25·3.15153137/4 = 0.55303914; at stage 0: 0.75 − 0.25·3.15153137/2 < 0.5 → t_step."""
    args = (torch.tensor([0.75], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))
    assert segment_r(*args, 1, 2.0, 8.0, 1.0).item() == pytest.approx(0.75 - 0.25 * (1 + 8 / (1 + math.e)) / 4, rel=1e-12)
    assert segment_r(*args, 0, 2.0, 8.0, 1.0).item() == 0.5


# --- u ~ LogNormal, redrawn into the schedule's range (docs/math.md §7 step 1) -------------------------------

def test_sample_u_redraws_instead_of_clipping():
    schedule = CosineSchedule()
    u_lo, u_hi = u_range(schedule)               # ln u ∈ (−7.5, 7.5]: symmetric about P_mean = 0
    u = sample_u(schedule, 20_000, 0.0, 6.0, gen(0))   # ~21% of the raw draws fall outside
    assert ((u > u_lo) & (u <= u_hi)).all() and (t_of_u(schedule, u) > 0).all()
    assert not ((u == u_hi) | (u == u_lo)).any()  # clipping would pile ~10% on each bound
    # Truncated, not clipped: P(|ln u| < 3) = P(|z| < 0.5)/P(|z| < 1.25) = 0.3829/0.7887 = 0.4855
    # (clipping keeps 0.3829); binomial s.e. 0.0035.
    frac = (u.log().abs() < 3).double().mean().item()
    assert abs(frac - 0.4855) < 0.02, frac
    with pytest.raises(RuntimeError, match="after 100 redraws"):
        sample_u(schedule, 8, 20.0, 0.1, gen(1))


def test_sample_u_median_is_exp_p_mean():
    """ECT's CIFAR values (−1.1, 2.0): the range cuts 0.07% and 1e-5 of the mass, so the median is
    exp(P_mean) to well within the median's s.e. (1.2533·P_std/√n = 0.018 in ln u)."""
    u = sample_u(CosineSchedule(), 20_000, -1.1, 2.0, gen(2))
    assert abs(u.log().median().item() + 1.1) < 0.07
    assert abs(u.log().std().item() - 2.0) < 0.05


def test_sigma_data_rescales_p_mean_and_u_mid():
    obj = ECTObjective(iters=80, sigma_data=1.0)
    assert obj.p_mean == pytest.approx(-1.1 + math.log(2.0)) and obj.u_mid == pytest.approx(1.642)
    assert obj.sampler == SamplerSpec("ect", 2, {"u_mid": obj.u_mid})
    assert ECTObjective(iters=80, sigma_data=0.5).p_mean == -1.1
    assert default_huber_c("ect", 4) == 0.03 and default_huber_c("inv_gap", 4) == 0.0
    with pytest.raises(ValueError):
        ECTObjective(iters=80, sigma_data=1.0, weighting="snr1")


# --- the loss (docs/math.md §7 steps 3–5) --------------------------------------------------------------------

@pytest.mark.parametrize("weighting", ["ect", "inv_gap"])
def test_r_zero_is_denoising_loss(weighting):
    """q = 1 makes r = max(0, u·(1 − g(u))) = 0 for every u: the target is x itself, no reference call
    is made, and the loss is the same ρ and weight applied to the denoising error x̂ − x."""
    spy = Spy(mlp_denoiser())
    sigma_data = 0.8
    obj = ECTObjective(iters=100, sigma_data=sigma_data, q=1.0, weighting=weighting)
    x = torch.randn(256, 3, generator=gen(3))
    u = sample_u(spy.schedule, len(x), obj.p_mean, obj.p_std, gen(4))
    out = obj(spy, x, None, 17, gen(4))                   # draws the same u from the same generator
    assert spy.references() == [] and out.scalars["r_zero"] == 1.0
    online = spy.online()
    assert torch.equal(out.t, t_of_u(spy.schedule, u)) and torch.equal(online["t"], out.t)
    c = default_huber_c(weighting, 3)
    expected = ect_loss(online["x_hat"], x, u, torch.zeros_like(u), sigma_data, weighting, c)
    assert torch.equal(out.per_example, expected)         # exactly: the target is x itself
    weight = 1 / u**2 + 1 / sigma_data**2 if weighting == "ect" else 1 / u
    by_hand = weight * ((((online["x_hat"] - x) ** 2).mean(1) + c * c).sqrt() - c)
    assert torch.allclose(out.per_example, by_hand, rtol=1e-5, atol=0)
    assert torch.allclose(out.loss, out.per_example.mean())


def test_given_u_mixes_denoising_and_consistency_targets():
    """Stage 0 with the given u: r = 0 for u ≤ ln 7 — those examples are bitwise the denoising loss."""
    spy = Spy(mlp_denoiser())
    obj = ECTObjective(iters=100, sigma_data=0.5)
    u = torch.tensor([0.1, 0.5, 1.0, 1.9, 4.0, 10.0, 50.0, 1.0])
    x = torch.randn(len(u), 3, generator=gen(5))
    out = obj(spy, x, None, 0, gen(6), u=u)
    r = ect_r(u, 0, 2.0, 8.0, 1.0)
    zero = r == 0
    assert zero.tolist() == [True, True, True, True, False, False, False, True]
    (ref,) = spy.references()
    online = spy.online()
    # The reference runs at t_r where r > 0 and at the harmless t elsewhere (never at t = 0).
    t, t_r = t_of_u(spy.schedule, u), t_of_u(spy.schedule, r)
    assert torch.equal(ref["t"], torch.where(zero, t, t_r)) and torch.equal(online["t"], t)
    c = default_huber_c("ect", 3)
    target = torch.where(zero[:, None], x, ref["x_hat"])
    assert torch.equal(out.per_example, ect_loss(online["x_hat"], target, u, torch.where(zero, 0.0, r), 0.5, "ect", c))
    assert torch.equal(out.per_example[zero], ect_weight(u, r, 0.5, "ect")[zero] * pseudo_huber(online["x_hat"] - x, c)[zero])
    # Shared noise: z_r and z_u carry the same ε.
    eps_u = (online["z"] - expand_like(spy.schedule.alpha_sigma(t)[0], x) * x) / expand_like(spy.schedule.alpha_sigma(t)[1], x)
    alpha_r, sigma_r = (expand_like(a, x) for a in spy.schedule.alpha_sigma(t_r))
    assert torch.allclose(ref["z"][~zero], (alpha_r * x + sigma_r * eps_u)[~zero], atol=1e-5)


def test_reference_and_online_share_dropout_mask():
    """Stage 60 with q = 2 gives r = u in float32, so z_r = z_u and t_r = t: the reference and the online
    forward agree, and the loss is 0, iff they share the dropout mask (RNG replay, as in multistep)."""
    denoiser = mlp_denoiser(dropout=0.5).train()
    x = torch.randn(64, 3, generator=gen(7))
    t0 = torch.full((64,), 0.6)
    assert not torch.allclose(denoiser(x, t0).x_hat, denoiser(x, t0).x_hat)  # control: masks differ per call
    spy = Spy(denoiser)
    obj = ECTObjective(iters=8, stages=480, sigma_data=0.5, huber_c=0.0)  # stage_at(7, 8, 480) = 420; ρ(0) = 0 exactly
    out = obj(spy, x, None, 7, gen(8))
    (ref,) = spy.references()
    online = spy.online()
    assert torch.equal(ref["rng"], online["rng"])
    assert torch.equal(ref["z"], online["z"]) and torch.equal(ref["t"], online["t"])
    assert torch.equal(ref["x_hat"], online["x_hat"]) and (out.per_example == 0).all()


# --- sampling (docs/math.md §7 step 6) ------------------------------------------------------------------------

def test_ect_sampler_calls_and_one_step():
    spy = Spy(mlp_denoiser(dim=2))
    z = torch.randn(32, 2, generator=gen(9))
    out1 = ect(spy, z, time_grid(1))
    assert len(spy.calls) == 1 and spy.calls[0]["t"].unique().tolist() == [1.0]
    assert torch.equal(out1, spy.denoiser(z, 1.0).x_hat)          # 1 step = x̂(z_1, 1)

    spy.calls.clear()
    u_mid = 1.642
    out2 = ect(spy, z, time_grid(2), generator=gen(10), u_mid=u_mid)
    assert len(spy.calls) == 2
    t_mid = t_of_u(spy.schedule, u_mid)
    assert torch.equal(spy.calls[1]["t"], torch.full((32,), t_mid.item()))
    alpha, sigma = spy.schedule.alpha_sigma(t_mid)
    eps = torch.randn(z.shape, generator=gen(10))                  # fresh noise from the generator
    assert torch.allclose(spy.calls[1]["z"], alpha * out1 + sigma * eps, atol=1e-6)
    assert torch.equal(out2, spy.calls[1]["x_hat"])
    assert torch.equal(out2, ect(spy, z, time_grid(2), generator=gen(10), u_mid=u_mid))
    assert not torch.equal(out2, ect(spy, z, time_grid(2), generator=gen(11), u_mid=u_mid))

    with pytest.raises(ValueError, match="1 or 2 steps"):
        ect(spy, z, time_grid(3))
    with pytest.raises(UserError, match="^steps: "):
        generate(spy, 8, (2,), sampler="ect", steps=3)
    assert generate(spy, 8, (2,), sampler="ect", steps=2, u_mid=u_mid).shape == (8, 2)
    with pytest.raises(ValueError, match=r"^u_mid = 100000.0 lies outside the schedule.s range below t = 1.0$"):
        ect(spy, z, time_grid(2), u_mid=1e5)  # above u(1): re-noising would go past the start


# --- multistep ECT -----------------------------------------------------------------------------------

def test_multistep_ect_times_lie_inside_segments():
    S = 4
    obj = MultistepECTObjective(S, iters=80)
    schedule = CosineSchedule()
    for step in (0, 30, 79):
        times = obj.ect_times(schedule, 4096, step, gen(step))
        assert torch.equal(times.t_step, times.k.float() / S) and set(times.k.tolist()) == set(range(S))
        assert (times.t > times.t_step).all() and (times.t <= times.t_step + 1 / S + 1e-7).all()
        assert (times.s >= times.t_step).all() and (times.s < times.t).all()
    # Stage 0: r = t_step wherever (t − t_step)·g/2 ≥ t − t_step, i.e. g(u_t) ≥ 2 (u_t ≤ ln 7).
    times = obj.ect_times(schedule, 4096, 0, gen(12))
    small_u = (u_of_t(schedule, times.t) < math.log(7.0) - 1e-3) & (times.t - times.t_step > 1e-3)  # clear of rounding
    assert (times.s[small_u] == times.t_step[small_u]).all()
    # A late stage: r within (t − t_step)·9·2^−21 of t.
    late = MultistepECTObjective(S, iters=8, stages=160).ect_times(schedule, 1024, 7, gen(13))  # stage 140
    assert ((late.t - late.s) <= (late.t - late.t_step) * 9 * 2.0**-141 + 1e-7).all()


@pytest.mark.parametrize("weighting", ["vspace", "snr1"])
def test_multistep_ect_at_segment_start_is_consistency_target(weighting):
    """S = 2 and q = 1 (g ≥ 1) put r = t_step exactly: the target is consistency_target with z_s =
    z_{t_step} = α x + σ ε of the shared noise — x up to float32 invDDIM rounding, bitwise x for k = 0 —
    and the loss is MCM's consistency_loss of it."""
    S = 2
    spy = Spy(mlp_denoiser())
    obj = MultistepECTObjective(S, iters=100, q=1.0, weighting=weighting)
    x = torch.randn(512, 3, generator=gen(14))
    times = obj.ect_times(spy.schedule, len(x), 50, gen(15))
    assert torch.equal(times.s, times.t_step)
    out = obj(spy, x, None, 50, gen(16), times=times)
    online, (ref,) = spy.online(), spy.references()
    assert torch.equal(ref["t"], times.t)  # s = t_step: the reference runs at t and is not used
    # The reference's input is z_s = z_{t_step} of the shared noise: α_s x + σ_s ε with z_t's ε.
    alpha_s, sigma_s = (expand_like(a, x) for a in spy.schedule.alpha_sigma(times.t_step))
    alpha_t, sigma_t = (expand_like(a, x) for a in spy.schedule.alpha_sigma(times.t))
    eps = (online["z"] - alpha_t * x) / sigma_t
    assert torch.allclose(ref["z"], alpha_s * x + sigma_s * eps, rtol=0, atol=1e-5)
    target = consistency_target(spy.schedule, online["z"], ref["z"], ref["x_hat"], times.t, times.s, times.t_step)
    first = times.k == 0
    assert torch.equal(target[first], x[first]) and torch.equal(ref["z"][first], x[first])
    # invDDIM divides by c ≈ (t − t_step)·O(1), so float32 rounding (~1e-7) grows as t → t_step (gap ≥ 1e-5).
    assert torch.allclose(target, x, rtol=0, atol=1e-2)
    expected = consistency_loss(spy.schedule, online["x_hat"], target, times.t, weighting, obj.huber_c)
    assert torch.equal(out.per_example, expected)
    assert out.scalars == {"stage": 4.0}


# --- config, registry and CLI ------------------------------------------------------------------------

def test_make_objective_builds_ect_with_meta():
    x = torch.randn(1000, 2, generator=gen(17)) * 0.7
    data = make_dataset("fake", x.numpy(), Normaliser("points", (0.0, 0.0), (1.0, 1.0)), fraction=0.1)
    cpu, schedule = torch.device("cpu"), CosineSchedule()
    composed = make_objective(TrainConfig(objective="ect", init="none", iters=800), data, cpu, schedule)
    obj = composed.objective
    assert isinstance(obj, ECTObjective) and composed.teacher.weights is None
    sigma_data = float(data.train.double().std())
    assert obj.sigma_data == pytest.approx(sigma_data)
    hyper = composed.card["hyper"]
    for key in ("P_mean", "P_std", "q", "k", "b", "iters_per_stage", "u_mid"):
        assert key in hyper, key
    assert hyper["iters_per_stage"] == 100.0
    assert hyper["u_mid"] == pytest.approx(0.821 * sigma_data / 0.5)
    assert obj.sampler.name == "ect" and obj.sampler.options["u_mid"] == hyper["u_mid"]
    mect = make_objective(TrainConfig(objective="mect", init="none", student_steps=3), data, cpu, schedule)
    assert isinstance(mect.objective, MultistepECTObjective)
    assert (mect.objective.sampler.name, mect.objective.sampler.steps) == ("consistency", 3)
    assert mect.card["student_steps"] == 3
    with pytest.raises(UserError, match="^init: "):
        make_objective(TrainConfig(objective="ect"), data, cpu, schedule)  # init from a teacher needs one


def test_cli_ect_train_and_sample(cli, tmp_path):
    from fewstep.runs import load
    from fewstep.train.checkpoint import read_checkpoint

    tiny = ["--data", "moons", "--iters", "30", "--batch", "64", "--width", "32", "--eval-samples", "100", "--no-progress"]
    code, _, err = cli("train", "--out", tmp_path / "T", *tiny)
    assert code == 0, err
    code, _, err = cli("train", "--objective", "ect", "--teacher", tmp_path / "T", "--out", tmp_path / "S", "--iters", "20",
                       "--batch", "64", "--eval-samples", "100", "--no-progress")
    assert code == 0, err
    code, out, err = cli("sample", "--run", tmp_path / "S", "--out", tmp_path / "s.npz")
    assert code == 0, err
    assert "(ect, 2 steps)" in out
    with np.load(tmp_path / "s.npz") as f:
        assert f["samples"].shape == (1000, 2) and np.isfinite(f["samples"]).all()
    run = load(tmp_path / "S")
    assert run.default_sampler == "ect" and run.default_steps == 2
    # The student started from the teacher: after 20 warm-up steps (lr ≤ 4e-5) its weights are still close.
    teacher, student = read_checkpoint(tmp_path / "T"), read_checkpoint(tmp_path / "S")
    assert run.config.init == "teacher" and run.card.teacher_step == 30
    assert max((student.model[k] - v).abs().max().item() for k, v in teacher.ema.items()) < 1e-2
    assert run.sampler.options == {"u_mid": pytest.approx(run.card.hyper["sigma_data"] / 0.5 * 0.821)}
    code, _, err = cli("sample", "--run", tmp_path / "S", "--out", tmp_path / "s3.npz", "--steps", "3")
    assert code == 2 and err.count("\n") == 1 and "--steps" in err

    code, _, err = cli("train", "--objective", "mect", "--teacher", tmp_path / "T", "--out", tmp_path / "M", "--iters", "10",
                       "--batch", "64", "--student-steps", "2", "--eval-samples", "100", "--no-progress")
    assert code == 0, err
    mect = load(tmp_path / "M")
    assert mect.default_sampler == "consistency" and mect.default_steps == 2


def test_two_step_renoise_is_independent_of_the_initial_noise_for_every_seed():
    """Regression: the sampling stream of seed 0 once reused the initial noise as the "fresh" noise."""
    from fewstep.sampling import generate
    from fewstep.schedules import CosineSchedule, t_of_u

    class Echo:  # x̂ = z_t, so the output reveals the re-noise: x = α_mid z_1 + σ_mid ε
        schedule = CosineSchedule()

        def __call__(self, z_t, t, cond=None):
            return Prediction(z_t, torch.zeros_like(z_t))

    u_mid = 0.821
    alpha, sigma = Echo.schedule.alpha_sigma(t_of_u(Echo.schedule, u_mid))
    for seed in (0, 1, 2):
        z_1 = torch.randn((4000, 2), generator=torch.Generator().manual_seed(seed))
        x = generate(Echo(), 4000, (2,), sampler="ect", steps=2, seed=seed, u_mid=u_mid)
        eps = (x - alpha * z_1) / sigma
        corr = torch.corrcoef(torch.stack([eps.flatten(), z_1.flatten()]))[0, 1].abs().item()
        assert corr < 0.05, (seed, corr)
