"""``make_objective``: the objective a config trains, with its teacher and what the run card records
about both. One factory per objective name, in :data:`OBJECTIVES`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..data import Dataset
from ..errors import UserError
from ..guidance import Guided
from ..objectives import ConditionDropout, DiffusionObjective, ECTObjective, GuidanceRange, MultistepECTObjective, MultistepObjective, Objective
from ..param import Clipped, DenoiserLike
from ..registry import Registry
from ..samplers import SamplerSpec
from ..schedules import schedule_from_dict, table_steps
from .build import cond_nulls
from .card import DIFFUSION_STEPS
from .config import TrainConfig
from .teachers import Teacher, resolve_teacher

# name -> factory(config, dataset, teacher) -> (objective, what the card records about it)
Factory = Callable[[TrainConfig, Dataset, Teacher], "tuple[Objective, dict[str, Any]]"]
OBJECTIVES: Registry[Factory] = Registry("objective")


@dataclass
class Composed:
    objective: Objective
    teacher: Teacher
    card: dict[str, Any]   # teacher and objective fields of the run card, the run's own sampler among them


@OBJECTIVES.register("diffusion")
def _diffusion(config: TrainConfig, dataset: Dataset, teacher: Teacher) -> tuple[Objective, dict[str, Any]]:
    # Its quick evaluation samples with DDIM at eval_steps; the run's own sampler is DDIM at 64 steps.
    nulls = cond_nulls(config, dataset.num_classes)
    dropout = {"cond_dropout": config.cond_dropout, "nulls": nulls} if nulls else {}
    return (DiffusionObjective(config.eta, sampler_steps=config.eval_steps, **dropout),
            {"sampler": SamplerSpec("ddim", DIFFUSION_STEPS)})


def _multistep(config: TrainConfig, dataset: Dataset, teacher: Teacher) -> tuple[Objective, dict[str, Any]]:
    guided: dict[str, Any] = {}
    teacher_denoiser = teacher.denoiser
    w_range, interval = config.guidance_range, config.guidance_interval
    if config.guidance is not None or w_range is not None:  # distil the guided teacher (docs/math.md §10)
        if config.objective != "cd" or config.cond not in ("class", "text"):
            raise UserError("guidance distils a guided conditional teacher: --objective cd with a teacher trained "
                            "with --cond class or text", arg="guidance")
        if config.guidance is not None and w_range is not None:
            raise UserError("give one of a fixed w (--guidance) or a range (--guidance-range)", arg="guidance")
        if w_range is not None and not 0.0 <= w_range[0] < w_range[1]:
            raise UserError(f"expected LO,HI with 0 <= LO < HI, got {w_range[0]:g},{w_range[1]:g}", arg="guidance_range")
        if interval is not None and not 0.0 <= interval[0] < interval[1] <= 1.0:
            raise UserError(f"expected LO,HI with 0 <= LO < HI <= 1, got {interval[0]:g},{interval[1]:g}", arg="guidance_interval")
        # One student per w, or one w-conditioned student whose teacher is guided at each example's w.
        teacher_denoiser = Guided(teacher.denoiser, config.guidance, cond_nulls(config, dataset.num_classes), interval)
        guided = {"hyper": {"guidance": config.guidance} if w_range is None else {"guidance_range": list(w_range)}}
        if interval is not None:
            guided["hyper"]["guidance_interval"] = list(interval)
    elif interval is not None:
        raise UserError("a guidance interval needs --guidance or --guidance-range", arg="guidance_interval")
    if teacher.clip_x:  # after guidance: the x̂ the step uses is the one clipped (teachers.clips_x)
        teacher_denoiser = Clipped(teacher_denoiser)
    objective: Objective = MultistepObjective(
        teacher_denoiser if config.objective == "cd" else None, config.student_steps, iters=config.iters,
        n0=config.n0, n1=config.n1, anneal_frac=config.anneal_frac, teacher_sampler=config.teacher_sampler,
        eta=config.eta, huber_c=config.huber_c, weighting=config.weighting,
        n_max=table_steps(schedule_from_dict(config.schedule)),
    )
    if w_range is not None:
        objective = GuidanceRange(objective, *w_range)
    return objective, {"student_steps": config.student_steps, "sampler": objective.sampler,
                       "n_schedule": {"n0": config.n0, "n1": config.n1, "anneal_frac": config.anneal_frac}, **guided}


OBJECTIVES.register("cd")(_multistep)
OBJECTIVES.register("ct")(_multistep)


def _check_curriculum(config: TrainConfig) -> dict[str, Any]:
    if config.ect_q < 1:
        raise UserError(f"expected a number >= 1 (the curriculum's ratio q), got {config.ect_q}", arg="ect_q")
    if config.ect_stages < 1:
        raise UserError(f"expected a positive integer, got {config.ect_stages}", arg="ect_stages")
    return {"q": config.ect_q, "k": config.ect_k, "b": config.ect_b, "stages": config.ect_stages}


@OBJECTIVES.register("ect")
def _ect(config: TrainConfig, dataset: Dataset, teacher: Teacher) -> tuple[Objective, dict[str, Any]]:
    """ECT: the teacher gives only the initial weights, it is never called."""
    sigma_data = dataset.train_std()  # σ_d: the data's std in model units
    objective = ECTObjective(
        iters=config.iters, sigma_data=sigma_data, p_mean=config.ect_p_mean, p_std=config.ect_p_std,
        u_mid=config.ect_u_mid, weighting=config.ect_weighting, huber_c=config.ect_c, **_check_curriculum(config),
    )
    return objective, {"hyper": objective.describe(), "sampler": objective.sampler}


@OBJECTIVES.register("mect")
def _mect(config: TrainConfig, dataset: Dataset, teacher: Teacher) -> tuple[Objective, dict[str, Any]]:
    objective = MultistepECTObjective(config.student_steps, iters=config.iters, huber_c=config.huber_c,
                                      weighting=config.weighting, **_check_curriculum(config))
    state = objective.state()
    return objective, {"student_steps": config.student_steps, "sampler": objective.sampler,
                       "hyper": {k: v for k, v in state.items() if k != "student_steps"}}


def make_objective(config: TrainConfig, dataset: Dataset, device: torch.device, student: Any,
                   teacher: DenoiserLike | None = None) -> Composed:
    """The objective of ``config`` for ``student`` (its schedule and prediction type decide how a teacher
    is re-timed and whether its weights may start the student); ``teacher`` (any denoiser) overrides
    ``config.teacher``. A diffusion teacher has no teacher of its own."""
    factory = OBJECTIVES.get(config.objective, arg="objective")
    source = Teacher(None, None) if config.objective == "diffusion" else resolve_teacher(config, dataset, device, student, teacher)
    objective, card = factory(config, dataset, source)
    nulls = cond_nulls(config, dataset.num_classes)
    if nulls and config.objective in ("ct", "ect", "mect"):
        # No teacher's null condition to imitate: the student keeps learning its own (docs/math.md §10).
        objective = ConditionDropout(objective, config.cond_dropout, nulls)
    return Composed(objective, source, {**source.card, **card})
