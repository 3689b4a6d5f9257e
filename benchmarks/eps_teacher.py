"""ε-prediction diffusers teachers with a tiny final α (docs/math.md §12): what clipping the teacher's x̂ to
[−1, 1] and a v-parameterised student each do.

    python benchmarks/eps_teacher.py   → benchmarks/results/eps_teacher.json   (about 2 minutes on one thread)

Teachers: one small UNet2DModel (16/32 channels, 164k weights) per table, trained by diffusers' own recipe
(DDPMScheduler.add_noise, ε-MSE, uniform integer timesteps) on 8×8 digits in [−1, 1], on squaredcos_cap_v2
(α at t = 1: 4.8e-5) and, for comparison, on linear betas (5.6e-3), both at T = 1024.

1. ``x_hat``: at t = 1, 0.9, 0.75, 0.5, 0.25, 0.1, on held-out digits with fresh noise, ε̂'s RMS error and x̂'s
   spread and RMS error against x, raw and clipped, and the x̂ of the same network read as a v-model (a v
   student's start).
2. ``teacher_ddim``: each teacher's own DDIM samples at 2, 4, 8 and 64 steps, raw and clipped.
3. ``students``: CD students (S = 4) of the squaredcos teacher through fewstep's composition, from the
   teacher's weights, with the teacher's x̂ raw or clipped and an ε or a v student; each sampled with its own
   sampler (not clipped; and, for comparison, with clip_x). Loss at the start and at the end of training.
Samples: std and range in model units (the data: std 0.75 in [−1, 1]), the share of values outside [−1, 1],
and FD-classifier (fewstep's classifier clips its input to [−1, 1]) with its noise floor.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import diffusers
import torch

from fewstep.data import load_dataset
from fewstep.io import save_json
from fewstep.metrics import evaluate_samples
from fewstep.param import Clipped, Denoiser
from fewstep.runs import ModelConfig, TrainConfig, load, train
from fewstep.runs.diffusers_teacher import diffusers_teacher
from fewstep.runs.teachers import student_settings
from fewstep.samplers import ddim
from fewstep.schedules import time_grid
from fewstep.train.log import read_log

T = 1024
TABLES = ("squaredcos_cap_v2", "linear")
TIMES = (1.0, 0.9, 0.75, 0.5, 0.25, 0.1)
TEACHER_STEPS = (2, 4, 8, 64)
STUDENTS = {  # name: (the teacher's x̂ clipped, the student's prediction)
    "no clip + eps student": (False, "eps"),
    "clip + eps student": (True, "eps"),
    "clip + v student": (True, "v"),
    "no clip + v student": (False, "v"),
}


def train_teacher(folder: Path, table: str, data: torch.Tensor, iters: int, seed: int = 0) -> Path:
    """A UNet2DModel trained by diffusers' recipe, saved as a DDPM pipeline folder (the scheduler with diffusers'
    defaults, clip_sample=True among them: fewstep decides the clip itself)."""
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
                                 norm_num_groups=4, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=table, prediction_type="epsilon")
    opt = torch.optim.Adam(unet.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(iters):
        x0 = data[torch.randint(0, len(data), (64,), generator=g)]
        noise, steps = torch.randn(x0.shape, generator=g), torch.randint(0, T, (64,), generator=g)
        loss = torch.nn.functional.mse_loss(unet(scheduler.add_noise(x0, noise, steps), steps).sample, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    diffusers.DDPMPipeline(unet=unet.eval(), scheduler=scheduler).save_pretrained(folder)
    return folder


def spread(x: torch.Tensor) -> dict[str, float]:
    return {"std": float(x.std()), "min": float(x.min()), "max": float(x.max()),
            "outside": float((x.abs() > 1).float().mean())}


def quality(dataset, samples: torch.Tensor) -> dict[str, float]:
    scores = evaluate_samples(dataset, samples)
    return {**spread(samples), "fd_classifier": scores["fd_classifier"], "fd_floor": scores["fd_floor"]}


@torch.no_grad()
def x_hat_table(teacher, dataset, n: int = 512) -> list[dict[str, Any]]:
    """ε̂'s and x̂'s errors on held-out digits at each of TIMES, raw and clipped; and the x̂ of a v student that
    starts from the teacher's weights, its ε output read as v̂ (docs/math.md §12)."""
    read_as_v = Denoiser(teacher.backbone, teacher.schedule, prediction="v")
    g = torch.Generator().manual_seed(1)
    x = dataset.heldout[:n]
    rows = []
    for t in TIMES:
        eps = torch.randn(x.shape, generator=g)
        alpha, sigma = (float(a) for a in teacher.schedule.alpha_sigma(torch.tensor([t])))
        z = alpha * x + sigma * eps
        raw, clipped, as_v = teacher(z, t), Clipped(teacher)(z, t), read_as_v(z, t)
        rms = lambda a, b: float((a - b).square().mean().sqrt())  # noqa: E731
        rows.append({"t": t, "alpha": alpha, "eps_rms_error": rms(raw.eps_hat, eps),
                     "raw": {**spread(raw.x_hat), "rms_error": rms(raw.x_hat, x)},
                     "clipped": {**spread(clipped.x_hat), "rms_error": rms(clipped.x_hat, x)},
                     "read_as_v": {"rms_error": rms(as_v.x_hat, x), "rms_from_clipped_teacher": rms(as_v.x_hat, clipped.x_hat)}})
    return rows


@torch.no_grad()
def teacher_samples(teacher, dataset, n: int) -> dict[str, Any]:
    z = torch.randn((n, *dataset.shape), generator=torch.Generator().manual_seed(2))
    return {str(steps): {"raw": quality(dataset, ddim(teacher, z, time_grid(steps))),
                         "clipped": quality(dataset, ddim(teacher, z, time_grid(steps), clip_x=True))}
            for steps in TEACHER_STEPS}


def student(folder: Path, teacher: Path, dataset, clip: bool, prediction: str, iters: int, n: int) -> dict[str, Any]:
    config = TrainConfig(data="digits", objective="cd", teacher=f"diffusers:{teacher}", model=ModelConfig("diffusers-unet"),
                         cond="none", student_steps=4, iters=iters, batch=32, lr=5e-4, warmup=10, ema_halflife_frac=0.1,
                         eval_samples=n, log_every=1, ckpt_every=iters)
    config = dataclasses.replace(student_settings(config, dataset), prediction=prediction, teacher_clip=clip)
    tick = time.perf_counter()
    train(config, folder, dataset=dataset, progress=False)
    seconds = time.perf_counter() - tick
    run = load(folder, device="cpu")
    losses = [row["loss"] for row in read_log(folder / "log.jsonl") if "loss" in row]
    assert run.card.teacher_clip is clip and run.config.prediction == prediction
    return {**quality(dataset, run.sample_tensor(n, seed=3)), "sampled_with_clip": quality(dataset, run.sample_tensor(n, seed=3, clip_x=True)),
            "loss_first10": sum(losses[:10]) / 10, "loss_last10": sum(losses[-10:]) / 10, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/eps_teacher.json"))
    parser.add_argument("--teacher-iters", type=int, default=400)
    parser.add_argument("--student-iters", type=int, default=200)
    parser.add_argument("-n", type=int, default=500, help="samples per evaluation")
    parser.add_argument("--threads", type=int, default=1, help="more threads spin against a busy neighbour (60x slower measured)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_dataset("digits")
    heldout = dataset.heldout
    # E[x | z_1] is the mean image to within α_1: its RMS error is the data's per-pixel spread, the best any x̂ at t = 1 does
    out: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "data_std": float(heldout.std()),
                           "mean_image_rms_error": float((heldout - dataset.train.mean(0)).square().mean().sqrt())}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for table in TABLES:
            folder = train_teacher(root / table, table, dataset.train, args.teacher_iters)
            teacher = diffusers_teacher(folder, dataset, clip_x=False)
            out[table] = {"alpha_1": float(teacher.schedule.alpha_sigma(torch.tensor([1.0]))[0]),
                          "x_hat": x_hat_table(teacher, dataset), "teacher_ddim": teacher_samples(teacher, dataset, args.n)}
            print(table, json.dumps(out[table]["x_hat"][0]), flush=True)
        out["students"] = {}
        for name, (clip, prediction) in STUDENTS.items():
            out["students"][name] = student(root / name.replace(" ", "_"), root / TABLES[0], dataset, clip, prediction,
                                            args.student_iters, args.n)
            print(name, json.dumps(out["students"][name]), flush=True)
    out["seconds"] = time.perf_counter() - start
    save_json(args.out, out)


if __name__ == "__main__":
    main()
