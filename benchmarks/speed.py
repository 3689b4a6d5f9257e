"""Speed on this machine: train steps/s and samples/s (fp32, bf16), the cost of a consistency
distillation step against a diffusion step, and the sampler's time beyond its network calls.

    python benchmarks/speed.py [--out benchmarks/results/speed.json] [--seconds 6] [--threads N]

Run it on an otherwise idle machine: on 2 cores a second busy process makes two-thread torch ~5×
slower (measured), so the figures would be of the contention, not of fewstep.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from fewstep.runs.build import build_denoiser
from fewstep.runs.config import ModelConfig, preset_for
from fewstep.data import load_dataset
from fewstep.io import save_json
from fewstep.objectives import DiffusionObjective, MultistepObjective
from fewstep.sampling import generate
from fewstep.samplers import consistency
from fewstep.schedules import time_grid
from fewstep.train.ema import EMA

MODELS = {
    "mlp (moons preset)": ("moons", None),
    "mlp (digits preset)": ("digits", None),
    "unet (digits, width 32)": ("digits", ModelConfig(name="unet", width=32, mults=(1, 2), dropout=0.1)),
}


def rate(fn: Callable[[int], None], seconds: float) -> float:
    for i in range(3):  # warm-up
        fn(i)
    count, tick = 0, time.perf_counter()
    while time.perf_counter() - tick < seconds or count < 3:
        fn(count)
        count += 1
    return count / (time.perf_counter() - tick)


def setup(data: str, model: ModelConfig | None, precision: str):
    dataset = load_dataset(data)
    config = preset_for(data, dataset.kind)
    config = dataclasses.replace(config, precision=precision, model=model or config.model)
    torch.manual_seed(0)
    return dataset, config, build_denoiser(config, dataset.shape)


def train_rate(dataset, config, denoiser, objective, seconds: float) -> float:
    ema = EMA(denoiser.backbone, 100)
    opt = torch.optim.AdamW(denoiser.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)

    def step(i: int) -> None:
        idx = torch.randint(len(dataset.train), (config.batch,), generator=gen)
        out = objective(denoiser, dataset.train[idx], None, i, gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        opt.step()
        ema.update(denoiser.backbone)

    denoiser.train()
    return rate(step, seconds)


class FreeBackbone(torch.nn.Module):
    """Returns zeros at no cost: the sampler run on it is the sampler's own time, network excluded."""

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return torch.zeros_like(z)


def sampler_overhead(denoiser, shape, steps: int, n: int, seconds: float) -> dict:
    """The consistency sampler's time beyond its network calls: the sampler on a free backbone
    (schedule, parameterisation, DDIM arithmetic) against ``steps`` calls of the real backbone. Timing
    the difference of two noisy totals instead would drown a few percent in run-to-run noise."""
    denoiser.eval()
    z = torch.randn(n, *shape)
    ts = time_grid(steps)
    t = torch.full((n,), 0.5)
    free = type(denoiser)(FreeBackbone(), denoiser.schedule, denoiser.prediction, denoiser.precision)
    with torch.no_grad():
        overhead_s = 1 / rate(lambda i: consistency(free, z, ts), seconds)
        calls_s = 1 / rate(lambda i: [denoiser.raw(z, t) for _ in range(steps)], seconds)
    return {"steps": steps, "batch": n, "sampler_without_network_s": overhead_s, "network_calls_s": calls_s,
            "overhead_frac": overhead_s / calls_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed.json"))
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for label, (data, model) in MODELS.items():
        for precision in ("fp32", "bf16"):
            dataset, config, denoiser = setup(data, model, precision)
            diffusion = train_rate(dataset, config, denoiser, DiffusionObjective(), args.seconds)
            n = 4096 if dataset.kind == "points" else 512
            denoiser.eval()
            tick = time.perf_counter()
            generate(denoiser, n, dataset.shape, sampler="ddim", steps=16, seed=0)
            per_sample_16 = (time.perf_counter() - tick) / n
            row = {"model": label, "precision": precision, "batch": config.batch,
                   "params": sum(p.numel() for p in denoiser.parameters()),
                   "train_steps_per_s": round(diffusion, 2), "samples_per_s_16_steps": round(1 / per_sample_16, 1),
                   "samples_per_s_1_step": round(16 / per_sample_16, 1)}
            if precision == "fp32":
                teacher = build_denoiser(config, dataset.shape).eval().requires_grad_(False)
                cd = MultistepObjective(teacher, 4, iters=1000)
                cd_rate = train_rate(dataset, config, denoiser, cd, args.seconds)
                row["cd_steps_per_s"] = round(cd_rate, 2)
                row["cd_cost_vs_diffusion"] = round(diffusion / cd_rate, 3)
                row["sampler_overhead"] = sampler_overhead(denoiser, dataset.shape, 8, 256, args.seconds / 2)
            print(json.dumps(row), flush=True)
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_json(args.out, {"machine": {"threads": torch.get_num_threads(), "platform": platform.platform(),
                                     "processor": platform.processor(), "torch": torch.__version__}, "rows": rows})


if __name__ == "__main__":
    main()
