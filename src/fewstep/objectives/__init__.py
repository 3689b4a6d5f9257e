"""Objectives sharing one contract (see :mod:`fewstep.objectives.common`) and their registry."""
from __future__ import annotations

from typing import Any

import torch

from ..errors import UserError
from .common import LossOutput
from .diffusion import DiffusionObjective
from .ect import ECTObjective, MultistepECTObjective
from .multistep import MultistepObjective, consistency_target, pseudo_huber

# ect: Easy Consistency Tuning (1–2 step sampling, SPEC §7); mect: multistep ECT, S = --student-steps.
OBJECTIVES = ("diffusion", "cd", "ct", "ect", "mect")


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
    if config.objective in ("ect", "mect"):
        return _make_ect(config, dataset, device, teacher)
    raise UserError(f"--objective: expected one of {', '.join(OBJECTIVES)}, got {config.objective!r}")


def _make_ect(config: Any, dataset: Any, device: torch.device, teacher: Any) -> ECTObjective | MultistepECTObjective:
    """ECT (or multistep ECT): the teacher gives only the initial weights, it is never called."""
    from .teacher import load_teacher

    if config.ect_q < 1:
        raise UserError(f"--ect-q: expected a number >= 1 (the curriculum's ratio q), got {config.ect_q}")
    if config.ect_stages < 1:
        raise UserError(f"--ect-stages: expected a positive integer, got {config.ect_stages}")
    loaded = load_teacher(config, dataset, device, teacher)
    curriculum = {"q": config.ect_q, "k": config.ect_k, "b": config.ect_b, "stages": config.ect_stages}
    objective: ECTObjective | MultistepECTObjective
    if config.objective == "ect":
        sigma_data = float(dataset.train.double().std())  # σ_d: the data's std in model units
        objective = ECTObjective(
            iters=config.iters, sigma_data=sigma_data, p_mean=config.ect_p_mean, p_std=config.ect_p_std,
            u_mid=config.ect_u_mid, weighting=config.ect_weighting, huber_c=config.ect_c, **curriculum,
        )
        meta = objective.describe()
    else:
        objective = MultistepECTObjective(config.student_steps, iters=config.iters, huber_c=config.huber_c,
                                          weighting=config.weighting, **curriculum)
        meta = {"objective": "mect", "student_steps": config.student_steps, **objective.state()}
    objective.init_weights = loaded.weights
    objective.meta = {**loaded.meta, **meta}
    return objective


__all__ = [
    "LossOutput", "DiffusionObjective", "MultistepObjective", "ECTObjective", "MultistepECTObjective",
    "consistency_target", "pseudo_huber", "make_objective", "OBJECTIVES",
]
