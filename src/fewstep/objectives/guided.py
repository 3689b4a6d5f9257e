"""Objectives of conditional students, as wrappers of another objective (docs/math.md §10).

:class:`GuidanceRange`: a w-conditioned student (LCM, Luo et al. 2023), one student for a range of
guidance weights. Each example draws its own w ~ U[w_lo, w_hi]; the student sees it as
``cond["guidance"]`` (an embedding of w beside the time embedding), and the teacher, wrapped as
``Guided(teacher, None, …)``, is guided at that same w.

:class:`ConditionDropout`: a student trained without a teacher (CT, ECT) learns the null class only if
its own training drops the condition, as a diffusion teacher's does; it can then be guided when it
samples (two calls per step)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..batch import Batch
from ..cond import GUIDANCE, Cond, drop_condition
from ..param import Denoiser
from .common import LossOutput, Objective, ObjectiveBase


class ConditionWrapper(ObjectiveBase):
    """``objective`` called with another condition; its name, sampler, state and end-of-run measurements."""

    def __init__(self, objective: Objective) -> None:
        self.objective, self.name, self.sampler = objective, objective.name, objective.sampler

    def state(self) -> dict[str, Any]:
        return self.objective.state()

    def finalize(self, ema: Denoiser, heldout: Batch) -> dict[str, Any]:
        return self.objective.finalize(ema, heldout)


class GuidanceRange(ConditionWrapper):
    """``objective`` with each example's guidance weight w ~ U[lo, hi] added to its condition."""

    def __init__(self, objective: Objective, lo: float, hi: float) -> None:
        if not 0.0 <= lo < hi:
            raise ValueError(f"a guidance range needs 0 <= lo < hi, got ({lo}, {hi})")
        super().__init__(objective)
        self.lo, self.hi = float(lo), float(hi)

    def __call__(self, denoiser: Denoiser, x: Tensor, cond: Cond | None, step: int, generator: torch.Generator) -> LossOutput:
        if cond is None:
            raise ValueError("a w-conditioned student needs a class condition (cond is None)")
        w = self.lo + (self.hi - self.lo) * torch.rand(len(x), generator=generator)
        return self.objective(denoiser, x, {**cond, GUIDANCE: w.to(x.device)}, step, generator)


class ConditionDropout(ConditionWrapper):
    """``objective`` with each example's condition replaced by the null one with probability ``p``."""

    def __init__(self, objective: Objective, p: float, nulls: dict[str, int | float]) -> None:
        super().__init__(objective)
        self.p, self.nulls = float(p), dict(nulls)

    def __call__(self, denoiser: Denoiser, x: Tensor, cond: Cond | None, step: int, generator: torch.Generator) -> LossOutput:
        return self.objective(denoiser, x, drop_condition(cond, self.p, self.nulls, generator), step, generator)
