"""Which student recipe beats the training-free samplers (docs/math.md §11): cached ablations of the
objective (CD, CT, multistep ECT), budget, learning rate, batch, EMA and N schedule on the study's
teachers, each student next to the best training-free sampler at its NFE.

    python benchmarks/recipes.py --runs benchmarks/runs [--only NAME …] [--seeds 0 1]

Teachers are ``RUNS/teacher-DATA`` (see benchmarks/sampler_sweep.py, whose cached rows give the
baselines); students ``RUNS/recipe-NAME-seedK``. Results: ``benchmarks/results/recipes.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from fewstep.data import load_dataset
from fewstep.evaluation import against_training_free, evaluate_run
from fewstep.io import save_json
from fewstep.runs import ensure_trained, load
from fewstep.runs.config import preset_for, student_config

N_EVAL = {"moons": 2000, "checkerboard": 2000, "digits": 500}
SEEDS = (0, 1, 2)


def recipes() -> dict[str, tuple[str, dict[str, Any]]]:
    """name → (data, fields over the default student of that data's teacher)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for data in ("checkerboard",):  # a third set to test the CD/CT rule on (its teacher: 1.67× its floor)
        for s in (4,):
            out[f"{data}-cd-fixedN128-S{s}"] = (data, {"objective": "cd", "student_steps": s, "n0": 128, "n1": 128})
            out[f"{data}-ct-fixedN128-S{s}"] = (data, {"objective": "ct", "student_steps": s, "n0": 128, "n1": 128})
    for data in ("digits", "moons"):
        teacher_iters = preset_for(data, load_dataset(data).kind).iters
        for s in (1, 2, 4, 8):
            out[f"{data}-cd-S{s}"] = (data, {"objective": "cd", "student_steps": s})
            out[f"{data}-ct-S{s}"] = (data, {"objective": "ct", "student_steps": s})
            out[f"{data}-ct-x4-S{s}"] = (data, {"objective": "ct", "student_steps": s, "iters": teacher_iters})
            out[f"{data}-mect-S{s}"] = (data, {"objective": "mect", "student_steps": s})
            out[f"{data}-ct-fixedN128-S{s}"] = (data, {"objective": "ct", "student_steps": s, "n0": 128, "n1": 128})
            out[f"{data}-cd-fixedN128-S{s}"] = (data, {"objective": "cd", "student_steps": s, "n0": 128, "n1": 128})
            out[f"{data}-cd-ddim-fixedN128-S{s}"] = (data, {"objective": "cd", "student_steps": s, "n0": 128, "n1": 128, "teacher_sampler": "ddim"})
            out[f"{data}-ct-scratch-fixedN128-S{s}"] = (data, {"objective": "ct", "student_steps": s, "n0": 128, "n1": 128, "init": "none"})
            out[f"{data}-mect-x4-S{s}"] = (data, {"objective": "mect", "student_steps": s, "iters": teacher_iters})
        for s in (4, 8):
            out[f"{data}-cd-x4-S{s}"] = (data, {"objective": "cd", "student_steps": s, "iters": teacher_iters})
            out[f"{data}-ct-lr1e-3-S{s}"] = (data, {"objective": "ct", "student_steps": s, "lr": 1e-3})
            out[f"{data}-ct-ema0.3-S{s}"] = (data, {"objective": "ct", "student_steps": s, "ema_halflife_frac": 0.3})
            out[f"{data}-ct-batch4x-S{s}"] = (data, {"objective": "ct", "student_steps": s, "batch": 4 * preset_for(data, load_dataset(data).kind).batch})
            out[f"{data}-cd-dpm2-S{s}"] = (data, {"objective": "cd", "student_steps": s, "teacher_sampler": "dpm2"})
            out[f"{data}-cd-ddim-S{s}"] = (data, {"objective": "cd", "student_steps": s, "teacher_sampler": "ddim"})
            out[f"{data}-ct-x4-lr1e-3-S{s}"] = (data, {"objective": "ct", "student_steps": s, "iters": teacher_iters, "lr": 1e-3})
            out[f"{data}-ct-x4-ema0.3-S{s}"] = (data, {"objective": "ct", "student_steps": s, "iters": teacher_iters, "ema_halflife_frac": 0.3})
            out[f"{data}-ct-x2-S{s}"] = (data, {"objective": "ct", "student_steps": s, "iters": teacher_iters // 2})
            out[f"{data}-ct-x4-scratch-S{s}"] = (data, {"objective": "ct", "student_steps": s, "iters": teacher_iters, "init": "none"})
    return out


def baselines(runs: Path, data: str) -> list[dict[str, Any]]:
    """The teacher's cached training-free rows (benchmarks/sampler_sweep.py), marked as such."""
    path = runs / f"teacher-{data}" / "sweep.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [{**r, "training_free": True} for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--only", nargs="*", help="recipe names (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0], help="training seeds")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.results / "recipes.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    table = recipes()
    for name in args.only or list(table):
        data, fields = table[name]
        teacher = dataclasses.replace(preset_for(data, load_dataset(data).kind), cond="none")
        for seed in args.seeds:
            key = f"{name}-seed{seed}"
            workdir = args.runs / f"recipe-{key}"
            config = student_config(teacher, str(args.runs / f"teacher-{data}"), **{**fields, "seed": seed})
            _, seconds = ensure_trained(config, workdir, overwrite=True)
            cache = workdir / f"eval-n{N_EVAL[data]}.json"
            if cache.is_file():
                rows = json.loads(cache.read_text())
            else:
                run = load(workdir, device="cpu")
                rows = evaluate_run(run, load_dataset(data), [run.default_sampler], [run.default_steps], n=N_EVAL[data], seeds=SEEDS)
                save_json(cache, rows)
            rows = against_training_free(rows, baselines(args.runs, data))
            results[key] = {"recipe": name, "data": data, "fields": fields, "seed": seed, "iters": config.iters,
                            "teacher_iters": teacher.iters, "rows": rows}
            save_json(out, results)
            r = rows[0]
            best = r.get("best_free", {})
            print(f"[recipes] {key}: {r['mean']:.4f} ± {r['std']:.4f} (best training-free {best.get('sampler')} "
                  f"{best.get('mean', float('nan')):.4f}; excess ratio {r.get('excess_ratio', float('nan')):.2f})", flush=True)


if __name__ == "__main__":
    main()
