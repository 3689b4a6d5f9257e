"""Objectives sharing one contract (see :mod:`fewstep.objectives.common`): the math only. Which
objective a run trains, with which teacher, is composed in :mod:`fewstep.runs.objective`."""
from .common import LossOutput, Objective, ObjectiveBase
from .diffusion import DiffusionObjective
from .guided import ConditionDropout, GuidanceRange
from .ect import ECTObjective, MultistepECTObjective
from .multistep import MultistepObjective, consistency_target, pseudo_huber

__all__ = [
    "LossOutput", "Objective", "ObjectiveBase", "DiffusionObjective", "MultistepObjective", "ECTObjective",
    "MultistepECTObjective", "GuidanceRange", "ConditionDropout", "consistency_target", "pseudo_huber",
]
