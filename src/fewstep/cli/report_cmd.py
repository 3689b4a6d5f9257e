"""``fewstep report``: evaluate runs and write one self-contained ``report.html`` (and ``report.json``)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import UserError
from .args import bounded_int, count_int, float_list, int_list

if TYPE_CHECKING:
    from ..data import Dataset
    from ..runs import Run

TEACHER_STEPS = [1, 2, 4, 8]
TEACHER_SAMPLERS = ("ddim", "addim", "dpmpp2m", "unipc", "heun")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="evaluate runs into one self-contained HTML report",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Evaluate each run (a teacher with DDIM, aDDIM, DPM-Solver++(2M), UniPC and Heun at --steps; "
                                   "a student with its own sampler at its own steps, next to the best of its teacher's "
                                   "training-free samplers at the same NFE) and write DIR/report.html, which opens offline, "
                                   "and DIR/report.json.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders")
    p.add_argument("--out", required=True, type=Path, help="output folder for report.html and report.json")
    p.add_argument("-n", dest="count", type=count_int, default=2000, help="samples per seed")
    p.add_argument("--steps", type=int_list, default=TEACHER_STEPS, help="a teacher's step counts (students use their own; "
                   "dpmpp2m and unipc, which are DDIM at 1 and 2 steps, run from 3)")
    p.add_argument("--seeds", type=bounded_int(1, 100), default=3, help="number of sampling seeds")
    p.add_argument("--guidance", type=float_list, help="class-conditional runs: comma list of guidance weights w (e.g. "
                   "0,1,1.5,2,4); teachers are evaluated at each (a guided step costs 2 calls, counted in the NFE), "
                   "w-conditioned students at those in their range, and the report plots FD against class accuracy")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available, else CPU")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report.html and report.json")
    p.set_defaults(func=run, flags={"run": "RUN"})


def teacher_plan(steps: Sequence[int], samplers: Sequence[str] = TEACHER_SAMPLERS) -> list[tuple[str, int]]:
    """(spec, steps) a teacher is evaluated with: every sampler at every step count, except where a solver
    is DDIM exactly (``SAME_AS_DDIM_UP_TO``)."""
    from ..evaluation import SAME_AS_DDIM_UP_TO
    from ..samplers import parse_sampler

    return [(spec, s) for spec in samplers for s in steps if s > SAME_AS_DDIM_UP_TO.get(parse_sampler(spec).name, 0)]


def run(args: argparse.Namespace) -> None:
    from ..data import load_dataset
    from ..evaluation import against_training_free, baseline_weights, default_plan, evaluate_run, format_table, mark_training_free, missing_training_free
    from ..report import check_out, collect, write_report
    from .evaluate_cmd import open_teacher

    check_out(args.out, args.overwrite)  # refuse before minutes of sampling
    from ..runs import load

    runs: list[tuple[Path, Run]] = [(path, load(path, device=args.device)) for path in args.runs]
    datasets: list[Dataset] = []
    for path, model in runs:
        try:
            datasets.append(load_dataset(model.config.data, model.config.data_loader))
        except UserError as exc:
            raise UserError(f"the data {model.config.data!r} of {path} cannot be loaded for evaluation ({exc})", arg="run") from None
    teachers = [open_teacher(model, None, args.device, data) for (_, model), data in zip(runs, datasets)]  # a note, not an error, for a teacher not found
    n, seeds = args.count, tuple(range(args.seeds))

    rows: list[list[dict[str, Any]]] = [[] for _ in runs]
    for i, (path, model) in enumerate(runs):  # teachers first: a student's baselines reuse their rows
        if model.is_student:
            continue
        for spec, s in teacher_plan(args.steps):
            rows[i] += mark_training_free(evaluate_run(model, datasets[i], [spec], [s], n=n, seeds=seeds,
                                                       guidance=_weights(model, args.guidance)))
        print(format_table(rows[i], title=f"{path} ({datasets[i].name}, step {model.step})"), flush=True)

    # Baselines per teacher folder: the rows of a teacher in this report, else of an extra "(training-free)" entry.
    in_report = {model.workdir.resolve(): i for i, (_, model) in enumerate(runs) if not model.is_student}
    extra: dict[Path, tuple[Run, Dataset, list[dict[str, Any]]]] = {}
    for i, (path, model) in enumerate(runs):
        if not model.is_student:
            continue
        samplers, steps = default_plan(model)
        rows[i] = evaluate_run(model, datasets[i], samplers, steps, n=n, seeds=seeds, guidance=_weights(model, args.guidance))
        teacher = teachers[i]
        if teacher is not None:
            key = teacher.workdir.resolve()
            if key not in in_report and key not in extra:
                extra[key] = (teacher, datasets[i], [])
            baselines = rows[in_report[key]] if key in in_report else extra[key][2]
            added = missing_training_free(teacher, datasets[i], sorted({r["nfe"] for r in rows[i]}), baselines, n=n, seeds=seeds,
                                          guidance=baseline_weights(teacher, rows[i]))
            baselines += added
            rows[i] = against_training_free(rows[i], baselines)
            if added:
                print(format_table(added, title=f"{teacher.workdir} (training-free, for {path})"), flush=True)
        print(format_table(rows[i], title=f"{path} ({datasets[i].name}, step {model.step})"), flush=True)

    reports = [collect(model, datasets[i], _ordered(rows[i]), title=str(path)) for i, (path, model) in enumerate(runs)]
    reports += [collect(teacher, dataset, _ordered(baselines), title=f"{teacher.workdir} (training-free)")
                for teacher, dataset, baselines in extra.values()]
    html_path = write_report(args.out, reports, overwrite=args.overwrite)
    print(f"report written to {html_path} and {html_path.with_suffix('.json')}")


def _weights(model: Run, asked: Sequence[float] | None) -> list[float | None]:
    """The guidance weights a run is evaluated at: ``asked`` for a conditional teacher, those in its range
    for a w-conditioned student; unguided otherwise (a fixed-w student, an unconditional run)."""
    if not asked or not model.nulls() or model.card.hyper.get("guidance") is not None:
        return [None]
    if model.guidance_range is not None:
        lo, hi = model.guidance_range
        return [w for w in asked if lo <= w <= hi] or [None]
    if model.is_student and model.config.objective == "cd":
        return [None]  # distilled unguided: its null class was never trained
    return list(asked)


def _ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by sampler (TEACHER_SAMPLERS' order, then any other in order of appearance), then NFE: baselines
    added later join their sampler."""
    order = {name: k for k, name in enumerate(dict.fromkeys([*TEACHER_SAMPLERS, *(r["sampler"] for r in rows)]))}
    return sorted(rows, key=lambda r: (order[r["sampler"]], r.get("w") or 0.0, r["nfe"]))
