"""fewstep: few-step sampling for diffusion models (Multistep Consistency Models, aDDIM, ECT).

    import fewstep
    run = fewstep.load("runs/moons")          # a run folder made by `fewstep train` or fewstep.train
    x = run.sample(1000, steps=16, sampler="addim")

The run API (``load``, ``Run``, ``TrainConfig``, ``backbone``; ``fewstep.runs.train``) lives in
:mod:`fewstep.runs` and is imported on first use, so that importing the math alone (``fewstep.samplers``)
loads none of it. (``fewstep.train`` is the package of the generic training loop.)
"""
from typing import Any

from .param import Denoiser, Prediction, PredictionType
from .schedules import CosineSchedule, InterpolatedSchedule

__version__ = "0.1.0"
_RUNS = ("load", "Run", "TrainConfig", "backbone")
__all__ = [*_RUNS, "Denoiser", "Prediction", "PredictionType", "CosineSchedule", "InterpolatedSchedule", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _RUNS:
        from . import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'fewstep' has no attribute {name!r}")
