"""Distil any diffusion model into a 4-step multistep consistency student, from Python.

Your network only has to map (z_t, t, cond) to its prediction; wrap it in a `Denoiser` with its own
parameterisation and schedule. Here a small ε-prediction MLP (`examples/my_net.py`) stands in for
"your" model. Building it with `fewstep.backbone("module:Class", **kwargs)` records how to rebuild it, so
both runs reopen from their folders: `fewstep.load(...)` here, and from the shell
`PYTHONPATH=examples fewstep sample --run runs/custom_student --out s.npz` (the class must be importable).

    python examples/distill_custom_module.py
"""
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so that `my_net` imports from anywhere

import fewstep  # noqa: E402
from fewstep.data import load_dataset  # noqa: E402
from fewstep.runs import train  # noqa: E402

data = load_dataset("moons")
teacher = fewstep.Denoiser(fewstep.backbone("my_net:MyNet", dim=2, width=128), fewstep.CosineSchedule(), prediction="eps")

# 1. Train the teacher with fewstep's loop (skip this if yours is trained already).
train(fewstep.TrainConfig(data="moons", iters=1500, eval_samples=500), "runs/custom_teacher", dataset=data, student=teacher)

# 2. Distil: the student starts as a copy of the teacher's EMA weights; the teacher stays frozen.
teacher = fewstep.load("runs/custom_teacher", device="cpu").denoiser.requires_grad_(False)
student = copy.deepcopy(teacher).requires_grad_(True)
config = fewstep.TrainConfig(data="moons", objective="cd", student_steps=4, iters=750, lr=2e-4, ema_halflife_frac=0.1,
                             init="none", eval_samples=500)
train(config, "runs/custom_student", dataset=data, student=student, teacher=teacher)

# 3. Reopen the student from its folder and sample with its own sampler: exactly 4 network calls.
x = fewstep.load("runs/custom_student").sample(1000)
print("4-step samples in data units:", x[:3])
