"""Objectives sharing one contract (see :mod:`fewstep.objectives.common`) and their registry."""
from __future__ import annotations

from typing import Any

import torch

from ..errors import UserError
from .common import LossOutput
from .diffusion import DiffusionObjective
from .multistep import MultistepObjective, consistency_target, pseudo_huber

OBJECTIVES = ("diffusion", "cd", "ct")


def make_objective(config: Any, dataset: Any, device: torch.device, teacher: Any = None) -> Any:
    """The objective of ``config``; ``teacher`` (any denoiser) overrides ``config.teacher``."""
    if config.objective == "diffusion":
        return DiffusionObjective(config.eta)
    if config.objective in ("cd", "ct"):
        from .teacher import load_teacher

        teacher = load_teacher(config, dataset, device, teacher)
        objective = MultistepObjective(
            teacher.denoiser if config.objective == "cd" else None, config.student_steps, iters=config.iters,
            n0=config.n0, n1=config.n1, anneal_frac=config.anneal_frac, teacher_sampler=config.teacher_sampler,
            eta=config.eta, huber_c=config.huber_c, weighting=config.weighting,
        )
        objective.init_weights = teacher.weights
        objective.meta = {**teacher.meta, "student_steps": config.student_steps, "objective": config.objective,
                          "n_schedule": {"n0": config.n0, "n1": config.n1, "anneal_frac": config.anneal_frac}}
        return objective
    raise UserError(f"--objective: expected one of {', '.join(OBJECTIVES)}, got {config.objective!r}")


__all__ = ["LossOutput", "DiffusionObjective", "MultistepObjective", "consistency_target", "pseudo_huber", "make_objective", "OBJECTIVES"]
