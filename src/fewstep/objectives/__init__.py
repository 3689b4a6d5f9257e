"""Objectives sharing one contract (see :mod:`fewstep.objectives.common`) and their registry."""
from __future__ import annotations

from typing import Any

import torch

from ..errors import UserError
from .common import LossOutput
from .diffusion import DiffusionObjective


def make_objective(config: Any, dataset: Any, device: torch.device) -> Any:
    if config.objective == "diffusion":
        return DiffusionObjective(config.variance_eta)
    raise UserError(f"--objective: expected diffusion, got {config.objective!r}")


__all__ = ["LossOutput", "DiffusionObjective", "make_objective"]
