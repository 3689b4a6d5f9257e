"""fewstep: few-step sampling for diffusion models (Multistep Consistency Models, aDDIM, ECT)."""
from .param import Denoiser, Prediction, PredictionType
from .runs import Run, TrainConfig, backbone, load, train
from .schedules import CosineSchedule, InterpolatedSchedule

__version__ = "0.1.0"
__all__ = ["load", "Run", "train", "TrainConfig", "backbone", "Denoiser", "Prediction", "PredictionType",
           "CosineSchedule", "InterpolatedSchedule", "__version__"]
