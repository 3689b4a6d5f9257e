"""Multistep consistency distillation (CD) and training (CT) (docs/math.md §5; [MCM] Alg. 1, App. A.1).

Notation (docs/math.md → code):
    S            ``student_steps``   segments of length 1/S
    N_i          ``n_at(step)``      teacher discretisation, annealed log-linearly N_0 → N_1
    N_seg, T     ``n_seg``, ``T``    N_seg = max(1, round(N_i/S)), T = S·N_seg (≤ a tabulated schedule's T, §12)
    k, n         ``k``, ``n``        segment index and sub-step, t = t_step + n/T, s = t − 1/T
    x_tch        ``x_tch``           teacher estimate: x (CT) or x̂_teacher(z_t, t) (CD)
    x̂_ref        ``x_ref``           stop-grad student at (z_s, s), same weights and dropout mask
    x_target     ``x_target``        invDDIM_{t→t_step}(DDIM_{s→t_step}(x̂_ref, z_s), z_t)

CD and CT share :func:`consistency_target`; only the teacher estimate differs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..cond import Cond
from ..param import Denoiser, DenoiserLike, expand_like
from ..samplers import SamplerSpec, addim_step, ddim_step, inv_ddim
from ..samplers.solvers import midpoint_step
from ..schedules import Schedule
from .common import LossOutput, ObjectiveBase, per_example_mean, same_mask_reference

WEIGHTINGS = ("snr1", "vspace")
TEACHER_SAMPLERS = ("addim", "ddim", "dpm2")


def pseudo_huber(delta: Tensor, c: float) -> Tensor:
    """ρ(Δ) = sqrt(mean(Δ²) + c²) − c over one example's dimensions: [B, ...] → [B] (docs/math.md §5)."""
    return (per_example_mean(delta.square()) + c * c).sqrt() - c


def consistency_loss(schedule: Schedule, x_hat: Tensor, x_target: Tensor, t: Tensor, weighting: str, c: float) -> Tensor:
    """Per-example loss [B]: ``snr1`` = (SNR_t + 1)·ρ(x̂ − x_target); ``vspace`` = ρ((x̂ − x_target)/σ_t)."""
    alpha, sigma = schedule.alpha_sigma(t)
    if weighting == "snr1":
        return (alpha.square() / sigma.square() + 1.0) * pseudo_huber(x_hat - x_target, c)
    if weighting == "vspace":
        return pseudo_huber((x_hat - x_target) / expand_like(sigma, x_hat), c)
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def consistency_target(
    schedule: Schedule, z_t: Tensor, z_s: Tensor, x_ref: Tensor, t: Tensor, s: Tensor, t_step: Tensor
) -> Tensor:
    """x_target = invDDIM_{t→t_step}(ẑ_ref, z_t), ẑ_ref = DDIM_{s→t_step}(x̂_ref, z_s), or z_s itself
    where s = t_step (docs/math.md §5 steps 6–7). At t_step = 0 this is exactly x̂_ref (or z_s)."""
    at_start = expand_like(s == t_step, z_s)
    # Where s = t_step the DDIM step is the identity; evaluate it at a harmless time instead of σ_s = 0.
    s_safe = torch.where(s == t_step, t, s)
    z_ref = torch.where(at_start, z_s, ddim_step(schedule, x_ref, z_s, s_safe, t_step))
    return inv_ddim(schedule, z_ref, z_t, t, t_step)


@dataclass(frozen=True)
class SegmentTimes:
    k: Tensor       # [B] segment index
    t: Tensor       # [B]
    s: Tensor       # [B] = t − 1/T
    t_step: Tensor  # [B] = k/S


def segment_times(k: Tensor, n: Tensor, student_steps: int, n_seg: int) -> SegmentTimes:
    """t = (k·N_seg + n)/T, s = (k·N_seg + n − 1)/T, t_step = k·N_seg/T, computed from integers so that
    s equals t_step exactly when n = 1."""
    T = student_steps * n_seg
    base = k * n_seg
    return SegmentTimes(k, (base + n).float() / T, (base + n - 1).float() / T, base.float() / T)


class MultistepObjective(ObjectiveBase):
    """CD when ``teacher`` is given, CT when it is None (the data point is the teacher estimate)."""

    def __init__(
        self,
        teacher: DenoiserLike | None,
        student_steps: int,
        *,
        iters: int,
        n0: int = 64,
        n1: int = 1280,
        anneal_frac: float = 0.5,
        teacher_sampler: str = "addim",
        eta: float = 0.75,
        huber_c: float = 1e-3,
        weighting: str = "vspace",
        n_max: int | None = None,
    ) -> None:
        if teacher_sampler not in TEACHER_SAMPLERS:
            raise ValueError(f"teacher_sampler must be one of {TEACHER_SAMPLERS}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}")
        self.teacher = teacher
        self.S = student_steps
        self.iters, self.n0, self.n1, self.anneal_frac = iters, n0, n1, anneal_frac
        self.teacher_sampler, self.eta, self.huber_c, self.weighting = teacher_sampler, eta, huber_c, weighting
        self.n_max = n_max  # a tabulated teacher's T: a finer grid would step between times it cannot tell apart (§12)
        self.name = "cd" if teacher is not None else "ct"
        self.sampler = SamplerSpec("consistency", student_steps)

    def n_at(self, step: int) -> float:
        """N_i = exp(log N_0 + clip(i/I_anneal, 0, 1)·(log N_1 − log N_0)) (docs/math.md §5 step 1)."""
        anneal = self.anneal_frac * self.iters
        frac = 1.0 if anneal <= 0 else min(max(step / anneal, 0.0), 1.0)
        if frac == 0.0 or self.n0 == self.n1:
            return float(self.n0)  # exact: exp(log 64) rounds to 63.99…, and round(N/S) could flip
        if frac == 1.0:
            return float(self.n1)
        return math.exp(math.log(self.n0) + frac * (math.log(self.n1) - math.log(self.n0)))

    def n_seg_at(self, step: int) -> int:
        n_seg = round(self.n_at(step) / self.S)
        return max(1, n_seg if self.n_max is None else min(n_seg, self.n_max // self.S))

    @torch.no_grad()
    def teacher_step(self, schedule: Schedule, x: Tensor, z_t: Tensor, times: SegmentTimes, cond: Cond | None) -> Tensor:
        """z_s from z_t: aDDIM, DDIM or DPM-Solver++(2S) with the teacher's x̂ (CD), or exactly α_s x + σ_s ε (CT)."""
        if self.teacher is None:
            return ddim_step(schedule, x, z_t, times.t, times.s)
        pred = self.teacher(z_t, times.t, cond)
        x_tch = pred.x_hat
        if self.teacher_sampler == "dpm2":  # second order, two teacher calls (docs/math.md §5: any deterministic integrator)
            return midpoint_step(self.teacher, z_t, times.t, times.s, x_tch, cond)
        if self.teacher_sampler == "ddim":
            return ddim_step(schedule, x_tch, z_t, times.t, times.s)
        # docs/math.md §4 (a); of a guided teacher, from its conditional output (§10, [MCM] App. A.1)
        x_var = x_tch if pred.x_hat_cond is None else pred.x_hat_cond
        v_t = self.eta * per_example_mean((x_var - x).square())
        return addim_step(schedule, x_tch, z_t, times.t, times.s, v_t)

    def sample_times(self, batch: int, step: int, generator: torch.Generator) -> SegmentTimes:
        n_seg = self.n_seg_at(step)
        k = torch.randint(0, self.S, (batch,), generator=generator)
        n = torch.randint(1, n_seg + 1, (batch,), generator=generator)
        return segment_times(k, n, self.S, n_seg)

    def __call__(
        self, denoiser: Denoiser, x: Tensor, cond: Cond | None, step: int, generator: torch.Generator,
        times: SegmentTimes | None = None,
    ) -> LossOutput:
        schedule = denoiser.schedule
        times = times or self.sample_times(x.shape[0], step, generator)
        times = SegmentTimes(*(v.to(x.device) for v in (times.k, times.t, times.s, times.t_step)))
        eps = torch.randn(x.shape, generator=generator).to(x.device)
        alpha_t, sigma_t = (expand_like(a, x) for a in schedule.alpha_sigma(times.t))
        z_t = alpha_t * x + sigma_t * eps
        z_s = self.teacher_step(schedule, x, z_t, times, cond)

        # Same online weights and same dropout mask for the stop-grad reference: replay the RNG.
        s_eval = torch.where(times.s == times.t_step, times.t, times.s)  # never evaluate at s = 0
        x_ref = same_mask_reference(denoiser, z_s, s_eval, cond)
        x_hat = denoiser(z_t, times.t, cond).x_hat
        x_target = consistency_target(schedule, z_t, z_s, x_ref, times.t, times.s, times.t_step)
        per_example = consistency_loss(schedule, x_hat, x_target.detach(), times.t, self.weighting, self.huber_c)
        return LossOutput(per_example.mean(), per_example.detach(), times.t, {"n_seg": float(self.n_seg_at(step))})

    def state(self) -> dict[str, Any]:
        return {"student_steps": self.S, "n0": self.n0, "n1": self.n1, "anneal_frac": self.anneal_frac}
