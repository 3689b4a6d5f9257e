"""Teacher sources: where the frozen teacher of a distillation comes from, as a denoiser on the
student's schedule, with the weights a student may start from.

    ""               no teacher (CT or ECT from scratch)
    "ideal"          the data set's exact denoiser (gaussians8)
    "PATH"           a fewstep run folder (the default source)
    "diffusers:PATH" a local diffusers folder (diffusers_teacher.py)
    a Python object  any denoiser, passed to ``train(…, teacher=…)``

A new source is one module with ``@TEACHER_SOURCES.register("name")``, read from ``name:ARG`` (or the bare
``name``), and one import line in :mod:`fewstep.runs`. A teacher on another schedule is re-timed through log-SNR (docs/math.md
§12) when its range covers the student's, refused otherwise; never silently mixed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..data import Dataset, ideal_denoiser
from ..errors import UserError
from ..param import DenoiserLike, Retimed
from ..registry import Registry
from ..schedules import Schedule, describe, logsnr_range
from .config import TrainConfig
from .folder import open_denoiser

LOGSNR_TOL = 1e-3


@dataclass
class Teacher:
    denoiser: DenoiserLike | None                # None: CT or ECT from scratch, no teacher at all
    weights: dict[str, torch.Tensor] | None      # EMA weights to start the student from
    card: dict[str, Any] = field(default_factory=dict)  # teacher, teacher_step, teacher_data, teacher_clip
    clip_x: bool = False                         # CD clips its x̂ to [−1, 1] (after guidance, if any): see clips_x


@dataclass
class SourceContext:
    config: TrainConfig       # the student's
    dataset: Dataset
    device: torch.device


TEACHER_SOURCES: Registry[Callable[[str, SourceContext], Teacher]] = Registry("teacher source")
# What a student must take from its teacher source before it is built (a diffusers teacher's schedule and
# conditioning): source name -> (ARG, the student's config, dataset) -> that config, adapted and checked.
STUDENT_SETTINGS: dict[str, Callable[[str, TrainConfig, Dataset], TrainConfig]] = {}


@TEACHER_SOURCES.register("ideal")
def _ideal(arg: str, ctx: SourceContext) -> Teacher:
    from ..schedules import schedule_from_dict

    exact = ideal_denoiser(ctx.dataset, schedule_from_dict(ctx.config.schedule))
    if exact is None:
        raise UserError(f"'ideal' exists only for gaussians8, not for {ctx.dataset.name}", arg="teacher")
    if ctx.config.init == "teacher":
        raise UserError("the ideal teacher has no weights to start from; pass none", arg="init")
    return Teacher(exact, None, {"teacher": "ideal"})


def run_folder(path: str, ctx: SourceContext) -> Teacher:
    """The default source: a fewstep run folder of a diffusion teacher, its EMA weights."""
    config, card, ckpt, denoiser = open_denoiser(path, arg="teacher", device=ctx.device)
    if config.objective != "diffusion":
        raise UserError(f"{path} is a {config.objective} student; expected a diffusion teacher", arg="teacher")
    if tuple(card.data_shape) != tuple(ctx.dataset.shape):
        raise UserError(f"{path} was trained on examples of shape {list(card.data_shape)}; this data has "
                        f"{list(ctx.dataset.shape)}", arg="teacher")
    if config.cond == "text" and (ctx.config.cond, ctx.config.text_encoder) != ("text", config.text_encoder):
        # The student learns the teacher's captions through the same token states: the prompt bank is shared.
        raise UserError(f"{path} is conditioned on captions through the text encoder {config.text_encoder!r}; its student "
                        f"must be too (got cond {ctx.config.cond!r}, encoder {ctx.config.text_encoder!r})", arg="teacher")
    denoiser.requires_grad_(False)
    weights = ckpt.ema if ctx.config.init == "teacher" else None
    return Teacher(denoiser, weights, {"teacher": str(path), "teacher_step": ckpt.step, "teacher_data": config.data})


def python_teacher(given: DenoiserLike, init: str) -> Teacher:
    """A denoiser object; the student starts from its backbone's weights if it has one and ``init`` asks."""
    weights = None
    if init == "teacher" and isinstance(getattr(given, "backbone", None), torch.nn.Module):
        weights = {k: v.detach().clone() for k, v in given.backbone.state_dict().items()}  # type: ignore[attr-defined]
    return Teacher(given, weights, {"teacher": "python object"})


def split_source(text: str) -> tuple[str | None, str]:
    """``ideal`` → ("ideal", ""); ``name:ARG`` for a registered name → (name, ARG); anything else is a
    run folder → (None, path), whose absence is then the error."""
    if text in TEACHER_SOURCES:
        return text, ""
    name, sep, rest = text.partition(":")
    if sep and name in TEACHER_SOURCES:
        return name, rest
    return None, text


def student_settings(config: TrainConfig, dataset: Dataset) -> TrainConfig:
    """``config`` with what its teacher source decides (see :data:`STUDENT_SETTINGS`); unchanged for others."""
    name, arg = split_source(config.teacher) if config.teacher else (None, "")
    adapt = STUDENT_SETTINGS.get(name or "")
    return config if adapt is None else adapt(arg, config, dataset)


def on_schedule(teacher: DenoiserLike, schedule: Schedule) -> DenoiserLike:
    """``teacher`` as a denoiser on ``schedule``: itself when the schedules agree, else re-timed through
    log-SNR when its log-SNR range covers the student's; a one-line error otherwise."""
    if teacher.schedule.to_dict() == schedule.to_dict():
        return teacher
    (t_lo, t_hi), (s_lo, s_hi) = logsnr_range(teacher.schedule), logsnr_range(schedule)
    if s_lo < t_lo - LOGSNR_TOL or s_hi > t_hi + LOGSNR_TOL:
        raise UserError(
            f"the teacher's schedule {describe(teacher.schedule)} spans log-SNR [{t_lo:.3g}, {t_hi:.3g}], which does not "
            f"cover the student's {describe(schedule)} [{s_lo:.3g}, {s_hi:.3g}]; give the student a schedule inside "
            "the teacher's range", arg="teacher")
    return Retimed(teacher, schedule)


def clips_x(asked: bool | None, teacher: DenoiserLike, dataset: Dataset) -> bool:
    """Whether CD clips the teacher's x̂ to the image range [−1, 1] (docs/math.md §12): as ``asked``, else for an
    ε-prediction teacher of images, whose x̂ = (z − σ ε̂)/α multiplies ε̂'s error by σ/α (2·10⁴ at t = 1 on
    squaredcos_cap_v2). The clip never moves x̂ away from E[x | z_t], which lies in the range; a v or x teacher's
    error is not amplified, and its ODE is left as it is unless asked."""
    if asked and dataset.kind != "images":
        raise UserError("clipping x̂ to [-1, 1] is for images; these data are points", arg="teacher_clip")
    if asked is not None:
        return asked
    return dataset.kind == "images" and getattr(teacher, "prediction", None) == "eps"


# Where a student may start from its teacher's weights with another parameterisation: an ε head read as a v
# head is right where σ → 0 (v = α ε − σ x → ε) and re-learnt by distillation elsewhere (docs/math.md §12).
REPARAMETERISED = {("eps", "v")}


def check_init(teacher: Teacher, student: Any) -> None:
    """Starting a student from its teacher's weights needs the same schedule, so that the same network input
    means the same noise level, and the same parameterisation, or one of :data:`REPARAMETERISED`."""
    if teacher.weights is None or teacher.denoiser is None:
        return
    mine = (student.schedule.to_dict(), getattr(student, "prediction", None))
    theirs = (teacher.denoiser.schedule.to_dict(), getattr(teacher.denoiser, "prediction", mine[1]))
    if mine[0] == theirs[0] and (theirs[1], mine[1]) in REPARAMETERISED:
        return
    if mine != theirs:
        raise UserError(f"the teacher's weights belong to schedule {describe(teacher.denoiser.schedule)} with {theirs[1]}-prediction, "
                        f"the student has {describe(student.schedule)} with {mine[1]}-prediction; start the student from them only on the same "
                        "schedule and parameterisation, or from scratch (none)", arg="init")


def resolve_teacher(config: TrainConfig, dataset: Dataset, device: torch.device, student: Any,
                    given: DenoiserLike | None = None) -> Teacher:
    """The teacher of ``config`` (``given`` takes precedence) as a denoiser on the ``student``'s schedule,
    with the weights the student starts from when ``config.init`` asks."""
    if given is not None:
        teacher = python_teacher(given, config.init)
    elif not config.teacher:
        if config.objective == "cd":
            raise UserError("cd needs a teacher run folder (or 'ideal' for gaussians8)", arg="teacher")
        if config.init == "teacher":
            raise UserError("'teacher' needs a teacher; pass none to train from scratch", arg="init")
        return Teacher(None, None)
    else:
        name, arg = split_source(config.teacher)
        source = run_folder if name is None else TEACHER_SOURCES.get(name, arg="teacher")
        teacher = source(arg, SourceContext(config, dataset, device))
    assert teacher.denoiser is not None
    check_init(teacher, student)
    if config.objective == "cd":
        teacher.clip_x = clips_x(config.teacher_clip, teacher.denoiser, dataset)
        teacher.card["teacher_clip"] = teacher.clip_x
    teacher.denoiser = on_schedule(teacher.denoiser, student.schedule)
    return teacher


# A teacher within this factor of its noise floor is near its data: CD from it is the better student.
# Far from it, CD can at best reach its teacher's ODE, while CT from the teacher's weights learns from the
# data itself (docs/math.md §5; benchmarks/results/recipes.md). Measured: CD wins on the moons (1.08×) and
# checkerboard (1.67×) teachers, CT on digits (3.9×); the boundary lies somewhere between, and 2.5 is
# their geometric middle, not a measured crossing.
NEAR_FLOOR = 2.5
QUALITY_STEPS, QUALITY_SEEDS = 64, (0, 1, 2)


def objective_for(score: float, floor: float) -> tuple[str, str]:
    """``cd`` for a teacher scoring within :data:`NEAR_FLOOR` of its noise floor, else ``ct``; with the
    reason in words."""
    if not (floor > 0 and score == score):
        return "cd", "the teacher's distance from its noise floor is unknown"
    ratio = score / floor
    objective = "cd" if ratio <= NEAR_FLOOR else "ct"
    return objective, f"the teacher scores {ratio:.2f}× its noise floor ({'≤' if objective == 'cd' else '>'} {NEAR_FLOOR}×)"


def default_objective(teacher: Any, dataset: Dataset, n: int = 2000) -> tuple[str, str]:
    """The default recipe's objective for a loaded teacher run (``fewstep.runs.Run``): its DDIM samples at
    64 steps scored against the held-out split over 3 seeds (one seed's score, such as the checkpoint's
    final evaluation, is too noisy: on moons it varies from 1.0× to 1.8× the floor), then
    :func:`objective_for`."""
    from ..evaluation import evaluate_run

    row = evaluate_run(teacher, dataset, ["ddim"], [QUALITY_STEPS], n=n, seeds=QUALITY_SEEDS)[0]
    return objective_for(row["mean"], row["floor"])
