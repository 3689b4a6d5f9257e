"""Composition: the only package that reads a `TrainConfig` or a run folder and turns them into objects.

    config.py     TrainConfig, presets, student_config
    build.py      backbone registry, user classes by import path, the rebuild recipe
    card.py       RunCard: what a run folder says beyond its config
    folder.py     reading a run folder as untrusted input
    teachers.py   teacher sources (run folder, ideal, Python object) on the student's schedule
    diffusers_unet.py     a diffusers UNet2DModel as a backbone (diffusers-unet)
    diffusers_teacher.py  the diffusers:PATH source (a save_pretrained folder)
    export.py     a run as a folder stock diffusers loads (fewstep export)
    objective.py  make_objective
    train.py      train = compose + the generic loop; ensure_trained
    run.py        Run / load
"""
from . import diffusers_teacher, diffusers_unet  # noqa: F401  (register the diffusers:PATH source and the diffusers-unet backbone)
from .build import backbone
from .config import ModelConfig, TrainConfig, preset_for, student_config
from .run import Run, load
from .train import ensure_trained, train

__all__ = ["Run", "load", "train", "ensure_trained", "backbone", "TrainConfig", "ModelConfig", "preset_for", "student_config"]
