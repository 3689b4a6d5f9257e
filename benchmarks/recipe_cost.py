"""The cost of a student recipe relative to its teacher's training: seconds per training iteration of
each objective against the diffusion objective, measured interleaved in one process (so a busy
neighbour slows all alike), times the recipe's iterations over the teacher's.

    python benchmarks/recipe_cost.py [--seconds 4] [--rounds 3]   → benchmarks/results/recipe_cost.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch

from fewstep.data import load_dataset
from fewstep.io import save_json
from fewstep.runs.build import build_denoiser
from fewstep.runs.config import preset_for, student_config
from fewstep.runs.objective import make_objective
from speed import train_rate

OBJECTIVES = ("diffusion", "cd", "ct", "mect")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/recipe_cost.json"))
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = {}
    for data in ("moons", "digits"):
        dataset = load_dataset(data)
        teacher_config = dataclasses.replace(preset_for(data, dataset.kind), cond="none")
        teacher = build_denoiser(teacher_config, dataset.shape).eval().requires_grad_(False)
        rates: dict[str, list[float]] = {name: [] for name in OBJECTIVES}
        for _ in range(args.rounds):
            for name in OBJECTIVES:
                config = teacher_config if name == "diffusion" else student_config(teacher_config, "", name, student_steps=4)
                student = build_denoiser(config, dataset.shape)
                objective = make_objective(config, dataset, torch.device("cpu"), student, teacher=None if name == "diffusion" else teacher).objective
                rates[name].append(train_rate(dataset, config, student, objective, args.seconds))
        median = {name: statistics.median(r) for name, r in rates.items()}
        out[data] = {"iters_per_s": median, "cost_per_iter_vs_diffusion": {n: median["diffusion"] / r for n, r in median.items()},
                     "rounds": rates, "batch": teacher_config.batch, "teacher_iters": teacher_config.iters}
        print(data, json.dumps(out[data]["cost_per_iter_vs_diffusion"]), flush=True)
    save_json(args.out, {"threads": args.threads, **out})


if __name__ == "__main__":
    main()
