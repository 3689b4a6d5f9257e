"""Training-free samplers on the study's teachers, every (sampler, steps) cached: the DPM-Solver++(2M),
UniPC and Heun baselines on their grids, and aDDIM's v_t choices (b, c) × η × last step against DDIM
(docs/math.md §4, §11).

    python benchmarks/sampler_sweep.py --runs benchmarks/runs       # teachers from benchmarks/study.py

Teachers are ``RUNS/teacher-DATA`` (trained here when missing, with the data set's preset). Rows go to
``RUNS/teacher-DATA/sweep.jsonl`` (one per (spec, steps), reused) and all of them to
``benchmarks/results/sampler_sweep.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from fewstep.data import load_dataset
from fewstep.evaluation import evaluate_run
from fewstep.io import save_json
from fewstep.runs import ensure_trained, load
from fewstep.runs.config import preset_for

DATA = ("moons", "digits", "checkerboard")
N_EVAL = {"moons": 2000, "checkerboard": 2000, "digits": 500}
SEEDS = (0, 1, 2)
STEPS = (1, 2, 4, 8, 16, 64, 256)
FEW = (1, 2, 4, 8, 16)
BASELINES = ("ddim", "ddim:logsnr", "dpmpp2m", "dpmpp2m:logsnr", "unipc", "unipc:logsnr", "heun", "heun:t")
TABLE_ETAS = (0.1, 0.25, 0.5, 0.75, 1.0)
DATA_FREE_ETAS = (0.05, 0.1, 0.2, 0.5)
LARGE_ETAS = (1.5, 2.0, 3.0)  # the 1-step optimum sat at the largest η above: extend there


def plan() -> list[tuple[str, tuple[int, ...]]]:
    """(spec, steps) pairs: baselines everywhere, aDDIM's choices everywhere, its x̂ ending at few steps."""
    rows = [(spec, STEPS) for spec in BASELINES]
    for variance, etas in (("table", TABLE_ETAS), ("data_free", DATA_FREE_ETAS)):
        for eta in etas:
            rows.append((f"addim:{variance}:addim:eta={eta:g}", STEPS))
            rows.append((f"addim:{variance}:xhat:eta={eta:g}", FEW))
    rows += [(f"addim:table:addim:eta={eta:g}", (1, 2)) for eta in LARGE_ETAS]
    return rows


def cached_rows(workdir: Path, data: str) -> list[dict[str, Any]]:
    path = workdir / "sweep.jsonl"
    done = {(r["sampler"], r["steps"]): r for r in map(json.loads, path.read_text().splitlines())} if path.is_file() else {}
    run, dataset = load(workdir, device="cpu"), load_dataset(data)
    for spec, steps in plan():
        for s in steps:
            if (spec, s) in done:
                continue
            row = evaluate_run(run, dataset, [spec], [s], n=N_EVAL[data], seeds=SEEDS)[0]
            done[(spec, s)] = row
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"[sweep] {data} {spec} {s}: {row['mean']:.4f} ± {row['std']:.4f}", flush=True)
    return list(done.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--data", nargs="*", default=list(DATA))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.results / "sampler_sweep.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    for data in args.data:
        workdir = args.runs / f"teacher-{data}"
        ensure_trained(dataclasses.replace(preset_for(data, load_dataset(data).kind), cond="none"), workdir, overwrite=True)
        results[data] = {"run": str(workdir), "rows": cached_rows(workdir, data)}
        save_json(out, results)


if __name__ == "__main__":
    main()
