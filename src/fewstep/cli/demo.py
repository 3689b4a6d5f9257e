"""``fewstep demo``: train diffusion teachers on ``moons`` and ``digits``, compare DDIM, aDDIM and the
training-free solvers (DPM-Solver++(2M), UniPC, Heun on EDM's grid) from 1 to 256 network calls, and
train 1-, 2-, 4- and 8-step multistep consistency students by the default recipe (CD of a teacher near
its noise floor, CT from its weights otherwise: ``fewstep distill``'s ``--objective auto``), each next to
the best training-free sampler at its NFE. Prints the table, writes PNGs, ``results.json`` and ``report.html`` (the same rows, plot,
protocol and PNGs in one self-contained page); a run already in the output folder is reused (an
interrupted one is resumed).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ..io import check_folder_path

# "steps" are NFE budgets: each sampler takes the most steps that fit (Heun 2N − 1 calls; dpmpp2m and unipc,
# DDIM exactly at 1 and 2 steps, from 3), as fewstep.evaluation.training_free_plan plans them.
FULL = {"steps": [1, 2, 4, 8, 16, 64, 256], "samplers": ["ddim", "addim", "dpmpp2m", "unipc", "heun"], "seeds": 3, "students": [1, 2, 4, 8],
        "n": {"moons": 2000, "digits": 500}, "iters": {"moons": None, "digits": None}}
QUICK = {"steps": [1, 4], "samplers": ["ddim", "addim", "unipc"], "seeds": 2, "students": [4],
         "n": {"moons": 200, "digits": 64}, "iters": {"moons": 150, "digits": 30}}
PNG_STEPS = (1, 4, 16, 256)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: teachers on moons and digits, training-free samplers and few-step students against NFE",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__)
    p.add_argument("--out", type=Path, help="output folder (default: demo_out, or demo_out_quick with --quick)")
    p.add_argument("--quick", action="store_true", help="a seconds-long version for tests")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available, else CPU")
    p.add_argument("--overwrite", action="store_true", help="retrain teachers whose settings differ from this demo's")
    p.set_defaults(func=run)


def _ensure_run(config: Any, workdir: Path, dataset: Any, overwrite: bool) -> float:
    """Train, resume or reuse the run in ``workdir`` (see :func:`fewstep.runs.ensure_trained`)."""
    from ..runs import ensure_trained

    print(f"[demo] {workdir.name}: {config.objective}, {config.iters} iterations, {config.model.name}")
    status, seconds = ensure_trained(config, workdir, dataset=dataset, overwrite=overwrite)
    if status == "reused":
        print(f"[demo] reusing {workdir}")
    return seconds


def _png(run: Any, dataset: Any, path: Path, title: str, **sample_kw: Any) -> str:
    """Samples of ``run`` as a PNG (a grid, or a scatter over held-out points); returns the file name."""
    from ..io import save_png

    points = dataset.kind == "points"
    reference = dataset.to_data_units(dataset.heldout[:2000]) if points else None
    save_png(path, run.sample(1000 if points else 100, seed=0, **sample_kw), dataset.kind, title=title, reference=reference)
    return path.name


def _pngs(run: Any, dataset: Any, out: Path, entries: list[tuple[str, int]]) -> list[str]:
    """PNGs of the evaluated (sampler, steps) at PNG_STEPS and at each sampler's most steps."""
    names = []
    for sampler in dict.fromkeys(spec for spec, _ in entries):
        steps = [s for spec, s in entries if spec == sampler]
        names += [_png(run, dataset, out / f"{dataset.name}_{sampler}_{s}steps.png", f"{dataset.name}: {sampler}, {s} steps",
                       steps=s, sampler=sampler) for s in steps if s in PNG_STEPS or s == steps[-1]]
    return names


def run(args: argparse.Namespace) -> None:
    from ..runs import load
    from ..data import load_dataset
    from ..evaluation import against_training_free, evaluate_run, format_table, mark_training_free, missing_training_free
    from ..evaluation import training_free_plan
    from ..runs.config import override, preset_for, student_config
    from ..runs.teachers import default_objective
    from ..io import save_json, save_text
    from ..report import collect, grids_from_files, write_report

    plan = QUICK if args.quick else FULL
    out: Path = args.out or Path("demo_out_quick" if args.quick else "demo_out")
    check_folder_path(out, "out")
    out.mkdir(parents=True, exist_ok=True)
    total = time.perf_counter()
    stages: dict[str, float] = {}
    results: dict[str, Any] = {"plan": {k: v for k, v in plan.items()}, "datasets": {}}
    tables, reports = [], []
    for data in ("moons", "digits"):
        dataset = load_dataset(data)
        # Unconditional: the demo's tables predate class conditioning (issue 9); conditional runs are their own rows.
        teacher = override(preset_for(data, dataset.kind), iters=plan["iters"][data], device=args.device, cond="none")
        workdir = out / data
        stages[f"train {data} teacher"] = _ensure_run(teacher, workdir, dataset, args.overwrite)
        tick = time.perf_counter()
        run_ = load(workdir, device=args.device)
        seeds = tuple(range(plan["seeds"]))
        entries = training_free_plan(plan["steps"], plan["samplers"])
        rows = [row for spec, s in entries
                for row in mark_training_free(evaluate_run(run_, dataset, [spec], [s], n=plan["n"][data], seeds=seeds))]
        pngs = _pngs(run_, dataset, out, entries)
        student_rows: list[dict[str, Any]] = []
        stages[f"evaluate {data} teacher"] = time.perf_counter() - tick
        objective, why = default_objective(run_, dataset, n=plan["n"][data])  # the default recipe, as `fewstep distill` picks it
        print(f"[demo] {data} students: {objective} ({why})")
        for s in plan["students"]:
            student_dir = out / f"{data}-{objective}-S{s}"
            config = student_config(teacher, str(workdir), objective, student_steps=s)
            stages[f"distil {data} S={s}"] = _ensure_run(config, student_dir, dataset, args.overwrite)
            tick = time.perf_counter()
            student = load(student_dir, device=args.device)
            own = evaluate_run(student, dataset, ["consistency"], [s], n=plan["n"][data], seeds=seeds)
            # the teacher's rows are the baselines; only NFEs the plan lacks (256 in --quick) are evaluated
            rows += missing_training_free(run_, dataset, [r["nfe"] for r in own], rows, n=plan["n"][data], seeds=seeds,
                                          samplers=plan["samplers"])
            label = f"MCM-{objective.upper()}"
            student_rows += [{**row, "sampler": f"{label} (S={s}, {config.iters} it)"} for row in against_training_free(own, rows)]
            pngs.append(_png(student, dataset, out / f"{data}_mcm-{objective}_{s}steps.png", f"{data}: {label}, {s} steps"))
            stages[f"evaluate {data} S={s}"] = time.perf_counter() - tick
        rows = sorted(rows, key=lambda r: (plan["samplers"].index(r["sampler"]), r["nfe"])) + student_rows
        table = format_table(rows, title=f"{data}: teacher of {run_.step} iterations, and its distilled students")
        print(table, flush=True)
        tables.append(table)
        results["datasets"][data] = {"run": str(workdir), "train_iters": run_.step, "rows": rows, "pngs": pngs}
        reports.append(collect(run_, dataset, rows, title=data, grids=grids_from_files([out / name for name in pngs])))
    stages = {k: round(v, 1) for k, v in stages.items()}
    results["seconds"] = {"total": round(time.perf_counter() - total, 1), "stages": stages}
    save_json(out / "results.json", results)
    save_text(out / "results.md", "\n\n".join(tables) + "\n")
    write_report(out, reports, overwrite=True)
    print(f"[demo] {results['seconds']['total']:.0f} s in all ({json.dumps(stages)})")
    print(f"[demo] results, tables, PNGs and report.html are in {out.resolve()}")
