"""Distil any diffusion model into a 4-step multistep consistency student, from Python.

Your network only has to map (z_t, t, cond) to its prediction; wrap it in a `Denoiser` with its own
parameterisation and schedule. Here a tiny ε-prediction MLP stands in for "your" model.

    python examples/distill_custom_module.py
"""
import copy

import torch
from torch import nn

import fewstep
from fewstep.config import TrainConfig
from fewstep.data import load_dataset
from fewstep.sampling import generate
from fewstep.train.checkpoint import load_checkpoint
from fewstep.train.loop import train


class MyNet(nn.Module):
    """Any backbone: here an MLP that sees t as one extra input."""

    def __init__(self, dim: int = 2, width: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, z, t, cond=None):
        return self.net(torch.cat([z, t[:, None]], dim=1))


data = load_dataset("moons")
teacher = fewstep.Denoiser(MyNet(), fewstep.CosineSchedule(), prediction="eps")

# 1. Train the teacher with fewstep's loop (skip this if yours is trained already).
train(TrainConfig(data="moons", iters=1500, eval_samples=500), "runs/custom_teacher", dataset=data, student=teacher)

# 2. Distil: the student starts as a copy of the teacher's EMA weights; the teacher stays frozen.
teacher.backbone.load_state_dict(load_checkpoint("runs/custom_teacher").ema)
teacher.eval().requires_grad_(False)
student = copy.deepcopy(teacher).requires_grad_(True)
config = TrainConfig(data="moons", objective="cd", student_steps=4, iters=750, lr=2e-4, ema_halflife_frac=0.1,
                     init="none", eval_samples=500)
train(config, "runs/custom_student", dataset=data, student=student, teacher=teacher)

# 3. Sample with the student's EMA weights: exactly 4 network calls.
student.backbone.load_state_dict(load_checkpoint("runs/custom_student").ema)
x = generate(student.eval(), 1000, data.shape, sampler="consistency", steps=4, seed=0)
print("4-step samples in data units:", data.to_data_units(x)[:3])
