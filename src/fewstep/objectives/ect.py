"""Easy Consistency Tuning (docs/math.md §7; [ECT] and its official code), mapped to our VP process.

Notation (docs/math.md → code):
    u = σ/α          ``u``            ECT's (EDM/VE) noise level: z_t/α_t = x + u ε, u = exp(−λ_t/2)
    r                ``r``            the reference level, 0 ≤ r < u
    t_u, t_r         ``t``, ``t_r``   the same levels as schedule times (``t_of_u``)
    σ_d              ``sigma_data``   the data's std in model units
    P_mean, P_std    ``p_mean``, ``p_std``   log-normal of u; P_mean is shifted by ln(σ_d/0.5) here
    q, k, b          ``q``, ``k``, ``b``     r = max(0, u·(1 − q^{−(stage+1)}·g(u))), g(u) = 1 + k·sigmoid(−b u)
    D_u, D_r         ``d_u``, ``d_r``        x̂_θ(z_u, t_u) and stopgrad x̂_θ(z_r, t_r) (x where r = 0)

ECT starts from a diffusion teacher's weights and never calls the teacher. Multistep ECT
(:class:`MultistepECTObjective`, docs/math.md §7 "beyond the paper") is MCM's CT (docs/math.md §5) with ECT's
curriculum choosing s = r inside each segment; everything after the choice of times is reused.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..cond import Cond
from ..param import Denoiser, expand_like
from ..samplers import SamplerSpec
from ..schedules import Schedule, t_min, t_of_u, u_of_t, u_range
from .common import LossOutput, ObjectiveBase, same_mask_reference
from .multistep import MultistepObjective, SegmentTimes, pseudo_huber

ECT_WEIGHTINGS = ("ect", "inv_gap")
SIGMA_DATA_REF = 0.5   # ECT's hyper-parameters are stated for data of std 0.5
T_MIN = 1e-5           # the network is never evaluated at t = 0 (docs/math.md §1)


def stage_at(step: int, iters: int, stages: int) -> int:
    """stage = ⌊i / iters_per_stage⌋, iters_per_stage = iters/stages (docs/math.md §7 step 2), in integers."""
    return (step * stages) // max(iters, 1)


def ect_g(u: Tensor, k: float, b: float) -> Tensor:
    """g(u) = 1 + k·sigmoid(−b u)."""
    return 1.0 + k * torch.sigmoid(-b * u)


def ect_r(u: Tensor, stage: int, q: float, k: float, b: float) -> Tensor:
    """r = max(0, u·(1 − q^{−(stage+1)}·g(u))) (docs/math.md §7 step 2): 0 early on for small u, → u as stages grow."""
    return (u * (1.0 - q ** -(stage + 1) * ect_g(u, k, b))).clamp_min(0.0)


def segment_r(t: Tensor, t_step: Tensor, u_t: Tensor, stage: int, q: float, k: float, b: float) -> Tensor:
    """Multistep ECT: r = max(t_step, t − (t − t_step)·q^{−(stage+1)}·g(u_t)), in t units (docs/math.md §7)."""
    return torch.maximum(t_step, t - (t - t_step) * q ** -(stage + 1) * ect_g(u_t, k, b))


def sample_u(
    schedule: Schedule, batch: int, p_mean: float, p_std: float, generator: torch.Generator, max_rounds: int = 100
) -> Tensor:
    """u ~ LogNormal(P_mean, P_std) inside the schedule's range (u_min, u_max]: values outside are
    redrawn, not clipped (docs/math.md §7 step 1), as are those whose time rounds to t = 0. Returns [B]."""
    u_lo, u_hi = u_range(schedule)
    u = torch.empty(batch)
    todo = torch.ones(batch, dtype=torch.bool)
    for _ in range(max_rounds):
        count = int(todo.sum())
        if count == 0:
            return u
        u[todo] = torch.exp(p_mean + p_std * torch.randn(count, generator=generator))
        todo = ~((u > u_lo) & (u <= u_hi) & (t_of_u(schedule, u) > 0))
    raise RuntimeError(
        f"sample_u: LogNormal({p_mean:.3g}, {p_std:.3g}) left values outside the schedule's range "
        f"({u_lo:.3g}, {u_hi:.3g}] after {max_rounds} redraws"
    )


def default_huber_c(weighting: str, dims: int) -> float:
    """ECT's summed c = 0.06 as a mean over d dimensions, 0.06/√d; c = 0 with the 1/(u − r) weighting."""
    return 0.06 / math.sqrt(dims) if weighting == "ect" else 0.0


def ect_weight(u: Tensor, r: Tensor, sigma_data: float, weighting: str) -> Tensor:
    """``ect``: 1/u² + 1/σ_d² (EDM's λ(σ)); ``inv_gap``: 1/(u − r) (docs/math.md §7 step 5). [B] → [B]."""
    if weighting == "ect":
        return u.square().reciprocal() + 1.0 / sigma_data**2
    if weighting == "inv_gap":
        return (u - r).reciprocal()
    raise ValueError(f"weighting must be one of {ECT_WEIGHTINGS}, got {weighting!r}")


def ect_loss(d_u: Tensor, d_r: Tensor, u: Tensor, r: Tensor, sigma_data: float, weighting: str, c: float) -> Tensor:
    """Per-example loss [B]: weight(u, r)·ρ(D_u − D_r), ρ the pseudo-Huber over the mean of dimensions."""
    return ect_weight(u, r, sigma_data, weighting) * pseudo_huber(d_u - d_r, c)


class ECTObjective(ObjectiveBase):
    """ECT: x̂_θ at noise level u regresses on the stop-grad x̂_θ at r < u along the same noise."""

    name = "ect"

    def __init__(
        self, *, iters: int, sigma_data: float, p_mean: float = -1.1, p_std: float = 2.0, q: float = 2.0,
        k: float = 8.0, b: float = 1.0, stages: int = 8, u_mid: float = 0.821, weighting: str = "ect",
        huber_c: float | None = None,
    ) -> None:
        if weighting not in ECT_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {ECT_WEIGHTINGS}, got {weighting!r}")
        if not (sigma_data > 0 and p_std > 0 and q >= 1 and stages >= 1):
            raise ValueError(f"need sigma_data > 0, p_std > 0, q >= 1, stages >= 1 (got {sigma_data}, {p_std}, {q}, {stages})")
        scale = sigma_data / SIGMA_DATA_REF
        self.iters, self.stages, self.sigma_data = iters, stages, sigma_data
        self.p_mean, self.p_std = p_mean + math.log(scale), p_std   # docs/math.md §7 step 1: shift by ln(σ_d/0.5)
        self.q, self.k, self.b = q, k, b
        self.u_mid = u_mid * scale                                  # the 2-step sampler's level, model units
        self.weighting, self.huber_c = weighting, huber_c
        self.sampler = SamplerSpec("ect", 2, {"u_mid": self.u_mid})

    def describe(self) -> dict[str, Any]:
        """The hyper-parameters as used (model units: P_mean shifted, u_mid scaled)."""
        return {"P_mean": self.p_mean, "P_std": self.p_std, "q": self.q, "k": self.k, "b": self.b,
                "iters_per_stage": self.iters / self.stages, "u_mid": self.u_mid, "sigma_data": self.sigma_data,
                "weighting": self.weighting, "huber_c": self.huber_c}

    def __call__(
        self, denoiser: Denoiser, x: Tensor, cond: Cond | None, step: int, generator: torch.Generator,
        u: Tensor | None = None,
    ) -> LossOutput:
        schedule = denoiser.schedule
        stage = stage_at(step, self.iters, self.stages)
        u = sample_u(schedule, x.shape[0], self.p_mean, self.p_std, generator) if u is None else torch.as_tensor(u).float().cpu()
        r = ect_r(u, stage, self.q, self.k, self.b)                       # [B]
        t, t_r = t_of_u(schedule, u), t_of_u(schedule, r)                 # [B]
        at_data = t_r == 0  # r = 0, or below the schedule's range: the target is x itself
        r = torch.where(at_data, torch.zeros_like(r), r)
        u, r, t, t_r, at_data = (v.to(x.device) for v in (u, r, t, t_r, at_data))
        eps = torch.randn(x.shape, generator=generator).to(x.device)

        # Shared noise (docs/math.md §7 step 3): z_u = α_u x + σ_u ε, z_r = α_r x + σ_r ε.
        alpha, sigma = (expand_like(a, x) for a in schedule.alpha_sigma(t))
        alpha_r, sigma_r = (expand_like(a, x) for a in schedule.alpha_sigma(t_r))
        z_u = alpha * x + sigma * eps
        z_r = alpha_r * x + sigma_r * eps

        # D_r: same weights and dropout mask (RNG replay); x where r = 0, never evaluated at t = 0.
        d_r = x
        if not bool(at_data.all()):
            x_ref = same_mask_reference(denoiser, z_r, torch.where(at_data, t, t_r), cond)
            d_r = torch.where(expand_like(at_data, x), x, x_ref)
        d_u = denoiser(z_u, t, cond).x_hat
        c = self.huber_c if self.huber_c is not None else default_huber_c(self.weighting, x[0].numel())
        per_example = ect_loss(d_u, d_r.detach(), u, r, self.sigma_data, self.weighting, c)
        scalars = {"stage": float(stage), "r_zero": at_data.float().mean().item()}
        return LossOutput(per_example.mean(), per_example.detach(), t, scalars)


class MultistepECTObjective(MultistepObjective):
    """Multistep ECT: k ~ U{0..S−1}, t ~ U(t_step, t_step + 1/S], s = r from ECT's curriculum; the shared
    noise z_r = α_r x + σ_r ε (CT), the target through DDIM/invDDIM and the loss are MCM's (docs/math.md §5)."""

    def __init__(
        self, student_steps: int, *, iters: int, q: float = 2.0, k: float = 8.0, b: float = 1.0, stages: int = 8,
        huber_c: float = 1e-3, weighting: str = "vspace",
    ) -> None:
        super().__init__(None, student_steps, iters=iters, huber_c=huber_c, weighting=weighting)
        if not (q >= 1 and stages >= 1):
            raise ValueError(f"need q >= 1 and stages >= 1 (got {q}, {stages})")
        self.name = "mect"
        self.q, self.k, self.b, self.stages = q, k, b, stages

    def ect_times(self, schedule: Schedule, batch: int, step: int, generator: torch.Generator) -> SegmentTimes:
        """Segment k uniform, t uniform in (t_step, t_step + 1/S] (at least T_MIN, or a table's t_0 (docs/math.md
        §12), above t_step), s = r."""
        k = torch.randint(0, self.S, (batch,), generator=generator)
        t_step = k.float() / self.S
        gap = ((1.0 - torch.rand(batch, generator=generator)) / self.S).clamp_min(max(T_MIN, t_min(schedule)))
        t = (t_step + gap).clamp_max(1.0)
        r = segment_r(t, t_step, u_of_t(schedule, t), stage_at(step, self.iters, self.stages), self.q, self.k, self.b)
        return SegmentTimes(k, t, r, t_step)

    def __call__(  # type: ignore[override]
        self, denoiser: Denoiser, x: Tensor, cond: Cond | None, step: int, generator: torch.Generator,
        times: SegmentTimes | None = None,
    ) -> LossOutput:
        times = times or self.ect_times(denoiser.schedule, x.shape[0], step, generator)
        out = super().__call__(denoiser, x, cond, step, generator, times=times)
        out.scalars = {"stage": float(stage_at(step, self.iters, self.stages))}
        return out

    def state(self) -> dict[str, Any]:
        return {"student_steps": self.S, "q": self.q, "k": self.k, "b": self.b, "iters_per_stage": self.iters / self.stages}
