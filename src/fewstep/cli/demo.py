"""``fewstep demo``: train diffusion teachers on ``moons`` and ``digits``, then compare DDIM and aDDIM
from 1 to 256 steps. Prints the table, writes PNGs and ``results.json``; a trained teacher already in
the output folder is reused (an interrupted one is resumed).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from ..errors import UserError

FULL = {"steps": [1, 2, 4, 8, 16, 64, 256], "samplers": ["ddim", "addim"], "seeds": 3,
        "n": {"moons": 2000, "digits": 500}, "iters": {"moons": None, "digits": None}}
QUICK = {"steps": [1, 4], "samplers": ["ddim", "addim"], "seeds": 2,
         "n": {"moons": 200, "digits": 64}, "iters": {"moons": 150, "digits": 30}}
PNG_STEPS = (1, 4, 16, 256)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: teachers on moons and digits, DDIM vs aDDIM against steps",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__)
    p.add_argument("--out", type=Path, help="output folder (default: demo_out, or demo_out_quick with --quick)")
    p.add_argument("--quick", action="store_true", help="a seconds-long version for tests")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available, else CPU")
    p.add_argument("--overwrite", action="store_true", help="retrain teachers whose settings differ from this demo's")
    p.set_defaults(func=run)


def _teacher(data: str, out: Path, iters: int | None, device: str, overwrite: bool) -> tuple[Path, float]:
    """Train (or reuse, or resume) the teacher for ``data`` in ``out/data``; returns its folder and seconds spent."""
    from ..config import override, preset_for
    from ..data import load_dataset
    from ..train.checkpoint import load_checkpoint, remove_run
    from ..train.loop import train

    dataset = load_dataset(data)
    config = override(preset_for(data, dataset.kind), iters=iters, device=device)
    workdir = out / data
    resume = False
    if (workdir / "checkpoint.json").is_file():
        ckpt = load_checkpoint(workdir, flag="--out")
        same = dataclasses.replace(ckpt.config, device=device) == config
        if same and ckpt.step >= config.iters:
            print(f"[demo] reusing the {data} teacher in {workdir} ({ckpt.step} iterations)")
            return workdir, 0.0
        if not same and not overwrite:
            raise UserError(f"--out: {workdir} holds a {data} teacher with other settings; pass --overwrite to retrain it")
        resume = same
        if not same:
            remove_run(workdir)
    tick = time.perf_counter()
    print(f"[demo] training the {data} teacher: {config.iters} iterations, {config.model.name}, {config.precision}")
    train(config, workdir, dataset=dataset, resume=resume)
    return workdir, time.perf_counter() - tick


def _pngs(run: Any, data: str, out: Path, plan: dict[str, Any]) -> list[str]:
    from ..data import load_dataset
    from ..io import save_png

    reference = load_dataset(data)
    ref_points = reference.to_data_units(reference.heldout[:2000]) if reference.kind == "points" else None
    written = []
    for sampler in plan["samplers"]:
        for steps in (s for s in PNG_STEPS if s in plan["steps"] or s == plan["steps"][-1]):
            n = 1000 if reference.kind == "points" else 100
            samples = run.sample(n, steps=steps, sampler=sampler, seed=0)
            path = out / f"{data}_{sampler}_{steps}steps.png"
            save_png(path, samples, reference.kind, title=f"{data}: {sampler}, {steps} steps", reference=ref_points)
            written.append(path.name)
    return written


def run(args: argparse.Namespace) -> None:
    from ..api import load
    from ..data import load_dataset
    from ..evaluation import evaluate_run, format_table
    from ..io import save_json

    plan = QUICK if args.quick else FULL
    out: Path = args.out or Path("demo_out_quick" if args.quick else "demo_out")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} is a file; expected a folder")
    out.mkdir(parents=True, exist_ok=True)
    total = time.perf_counter()
    stages: dict[str, float] = {}
    results: dict[str, Any] = {"plan": {k: v for k, v in plan.items()}, "datasets": {}}
    tables = []
    for data in ("moons", "digits"):
        workdir, seconds = _teacher(data, out, plan["iters"][data], args.device, args.overwrite)
        stages[f"train {data}"] = seconds
        tick = time.perf_counter()
        run_ = load(workdir, device=args.device)
        dataset = load_dataset(data)
        rows = evaluate_run(run_, dataset, plan["samplers"], plan["steps"], n=plan["n"][data], seeds=tuple(range(plan["seeds"])))
        pngs = _pngs(run_, data, out, plan)
        stages[f"evaluate {data}"] = time.perf_counter() - tick
        table = format_table(rows, title=f"{data}: teacher of {run_.step} iterations")
        print(table, flush=True)
        tables.append(table)
        results["datasets"][data] = {"run": str(workdir), "train_iters": run_.step, "rows": rows, "pngs": pngs}
    stages = {k: round(v, 1) for k, v in stages.items()}
    results["seconds"] = {"total": round(time.perf_counter() - total, 1), "stages": stages}
    save_json(out / "results.json", results)
    (out / "results.md").write_text("\n\n".join(tables) + "\n")
    print(f"[demo] {results['seconds']['total']:.0f} s in all ({json.dumps(stages)})")
    print(f"[demo] results, tables and PNGs are in {out.resolve()}")
