"""Train steps/s and samples/s of the two backbones on this machine, fp32 and bf16.

    python benchmarks/speed.py [--out benchmarks/results/speed.json] [--seconds 8]

Times the real training step of the diffusion objective (forward, backward, AdamW, EMA) at the
presets' batch sizes, and DDIM sampling throughput (network calls per second × batch).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from fewstep.build import build_denoiser
from fewstep.config import preset_for
from fewstep.data import load_dataset
from fewstep.io import save_json
from fewstep.objectives import DiffusionObjective
from fewstep.sampling import generate
from fewstep.train.ema import EMA


def time_train(data: str, precision: str, seconds: float) -> dict:
    dataset = load_dataset(data)
    config = preset_for(data, dataset.kind)
    import dataclasses

    config = dataclasses.replace(config, precision=precision)
    torch.manual_seed(0)
    denoiser = build_denoiser(config, dataset.shape)
    ema = EMA(denoiser.backbone, 100)
    opt = torch.optim.AdamW(denoiser.parameters(), lr=config.lr)
    objective = DiffusionObjective()
    gen = torch.Generator().manual_seed(0)

    def step(i: int) -> None:
        idx = torch.randint(len(dataset.train), (config.batch,), generator=gen)
        out = objective(denoiser, dataset.train[idx], None, i, gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        opt.step()
        ema.update(denoiser.backbone)

    for i in range(5):  # warm-up
        step(i)
    count, tick = 0, time.perf_counter()
    while time.perf_counter() - tick < seconds:
        step(count)
        count += 1
    train_rate = count / (time.perf_counter() - tick)

    denoiser.eval()
    n, steps = (4096, 16) if dataset.kind == "points" else (512, 16)
    tick = time.perf_counter()
    generate(denoiser, n, dataset.shape, sampler="ddim", steps=steps, seed=0)
    elapsed = time.perf_counter() - tick
    return {
        "data": data, "model": config.model.name, "precision": precision, "batch": config.batch,
        "params": sum(p.numel() for p in denoiser.parameters()),
        "train_steps_per_s": round(train_rate, 2),
        "sample_nfe_per_s_x_batch": round(n * steps / elapsed, 1),
        "samples_per_s_at_16_steps": round(n / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed.json"))
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    rows = [time_train(d, p, args.seconds) for d in ("moons", "digits") for p in ("fp32", "bf16")]
    for r in rows:
        print(json.dumps(r))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_json(args.out, {"machine": {"cpu_count": torch.get_num_threads(), "platform": platform.platform(),
                                     "torch": torch.__version__}, "rows": rows})


if __name__ == "__main__":
    main()
