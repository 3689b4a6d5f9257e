"""``fewstep report``: evaluate runs and write one self-contained ``report.html`` (and ``report.json``)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from .args import bounded_int, count_int, int_list

if TYPE_CHECKING:
    from ..runs import Run

TEACHER_STEPS = [1, 2, 4, 8]
TEACHER_SAMPLERS = ("ddim", "addim")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="evaluate runs into one self-contained HTML report",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Evaluate each run (a teacher with DDIM and aDDIM at --steps; a student with its own sampler "
                                   "at its own steps) and write DIR/report.html, which opens offline, and DIR/report.json.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders")
    p.add_argument("--out", required=True, type=Path, help="output folder for report.html and report.json")
    p.add_argument("-n", dest="count", type=count_int, default=2000, help="samples per seed")
    p.add_argument("--steps", type=int_list, default=TEACHER_STEPS, help="a teacher's step counts (students use their own)")
    p.add_argument("--seeds", type=bounded_int(1, 100), default=3, help="number of sampling seeds")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available, else CPU")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report.html and report.json")
    p.set_defaults(func=run, flags={"run": "RUN"})


def run(args: argparse.Namespace) -> None:
    from ..data import load_dataset
    from ..evaluation import default_plan, evaluate_run, format_table
    from ..report import check_out, collect, write_report

    check_out(args.out, args.overwrite)  # refuse before minutes of sampling
    from ..runs import load

    runs: list[tuple[Path, Run]] = [(path, load(path, device=args.device)) for path in args.runs]
    reports = []
    for path, model in runs:
        try:
            dataset = load_dataset(model.config.data, model.config.data_loader)
        except UserError as exc:
            raise UserError(f"the data {model.config.data!r} of {path} cannot be loaded for evaluation ({exc})", arg="run") from None
        samplers, steps = default_plan(model, args.steps, TEACHER_SAMPLERS)
        rows = evaluate_run(model, dataset, samplers, steps, n=args.count, seeds=tuple(range(args.seeds)))
        print(format_table(rows, title=f"{path} ({dataset.name}, step {model.step})"), flush=True)
        reports.append(collect(model, dataset, rows, title=str(path)))
    html_path = write_report(args.out, reports, overwrite=args.overwrite)
    print(f"report written to {html_path} and {html_path.with_suffix('.json')}")

