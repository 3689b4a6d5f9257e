"""fewstep: few-step sampling for diffusion models (Multistep Consistency Models, aDDIM, ECT)."""
from .api import Run, load
from .param import Denoiser, Prediction
from .schedules import CosineSchedule, InterpolatedSchedule

__version__ = "0.1.0"
__all__ = ["load", "Run", "Denoiser", "Prediction", "CosineSchedule", "InterpolatedSchedule", "__version__"]
