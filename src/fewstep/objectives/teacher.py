"""The frozen teacher of a distillation: a trained run's EMA weights, or an exact denoiser."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import UserError
from ..param import DenoiserLike


@dataclass
class Teacher:
    denoiser: DenoiserLike | None               # None for CT from scratch with no teacher at all
    weights: dict[str, torch.Tensor] | None     # EMA weights to start the student from
    meta: dict[str, Any] = field(default_factory=dict)


def load_teacher(config: Any, dataset: Any, device: torch.device, given: DenoiserLike | None = None) -> Teacher:
    """``config.teacher``: a run folder, ``ideal`` (the data set's exact denoiser) or empty (CT only);
    a ``given`` denoiser object takes precedence (the student then starts from its weights if it has them)."""
    from ..build import build_denoiser
    from ..data import ideal_denoiser
    from ..schedules import schedule_from_dict
    from ..train.checkpoint import load_checkpoint

    if given is not None:
        weights = None
        if config.init == "teacher" and isinstance(getattr(given, "backbone", None), torch.nn.Module):
            weights = {k: v.detach().clone() for k, v in given.backbone.state_dict().items()}
        return Teacher(given, weights, {"teacher": "python object"})
    if not config.teacher:
        if config.objective == "cd":
            raise UserError("--teacher: cd needs a teacher run folder (or 'ideal' for gaussians8)")
        if config.init == "teacher":
            raise UserError("--init: 'teacher' needs --teacher; pass --init none to train from scratch")
        return Teacher(None, None)
    if config.teacher == "ideal":
        exact = ideal_denoiser(dataset, schedule_from_dict(config.schedule))
        if exact is None:
            raise UserError(f"--teacher: 'ideal' exists only for gaussians8, not for {dataset.name}")
        if config.init == "teacher":
            raise UserError("--init: the ideal teacher has no weights to start from; pass --init none")
        return Teacher(exact, None, {"teacher": "ideal"})
    ckpt = load_checkpoint(config.teacher, flag="--teacher")
    if ckpt.config.objective != "diffusion":
        raise UserError(f"--teacher: {config.teacher} is a {ckpt.config.objective} student; expected a diffusion teacher")
    teacher = build_denoiser(ckpt.config, ckpt.extra["data_shape"]).to(device)
    teacher.backbone.load_state_dict(ckpt.ema)
    teacher.eval().requires_grad_(False)
    meta = {"teacher": str(config.teacher), "teacher_step": ckpt.step, "teacher_data": ckpt.config.data}
    return Teacher(teacher, ckpt.ema if config.init == "teacher" else None, meta)
