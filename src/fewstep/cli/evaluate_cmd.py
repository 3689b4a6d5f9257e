"""``fewstep evaluate``: quality against steps, with noise floors and seed spread."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..io import check_writable, save_json
from .args import bounded_int, count_int, float_list, float_pair, int_list, str_list

if TYPE_CHECKING:
    import torch

    from ..data import Dataset
    from ..metrics.inception import InceptionFID
    from ..runs import Run

NOT_A_FOLDER = ("", "ideal", "python object")  # teachers a student card may name that are no run folder


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="measure sample quality against steps", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="SWD (points) or FD-classifier (images) on the held-out split, mean ± std over 3 seeds, with the noise floor.")
    p.add_argument("--run", required=True, type=Path, help="run folder")
    p.add_argument("--sampler", type=str_list, help="comma list: ddim, addim, addim:data_free, addim:table:xhat, addim:table:eta=0.25, "
                   "dpmpp2m, unipc (:logsnr for a grid uniform in log-SNR; default uniform in t), heun (EDM grid; heun:t), ancestral, consistency "
                   "(default: the run's own)")
    p.add_argument("--steps", type=int_list, help="comma list of step counts (default: 1,2,4,8,16,64 for a teacher, S for a multistep student, 1,2 for ECT)")
    p.add_argument("-n", dest="count", type=count_int, default=2000, help="samples per seed")
    p.add_argument("--seeds", type=bounded_int(1, 100), default=3, help="number of sampling seeds")
    p.add_argument("--json", type=Path, help="write the rows and the protocol as JSON")
    p.add_argument("--fid-weights", type=Path, help="TorchScript inception-2015-12-05.pt (stylegan2-ada / clean-fid): also report "
                   "standard Inception FID and its noise floor (images only; never downloaded)")
    p.add_argument("--teacher", type=Path, help="a student's teacher (a run folder, or diffusers:PATH), for the training-free baselines "
                   "(default: the one its checkpoint names)")
    p.add_argument("--no-baselines", action="store_true", help="a student: skip its teacher's training-free samplers "
                   "(ddim, addim, dpmpp2m, unipc, heun at the student's NFE and at 256)")
    p.add_argument("--guidance", type=float_list, help="a class-conditional run: comma list of guidance weights w to sweep "
                   "(e.g. 0,1,1.5,2,4; a guided teacher step costs 2 calls; a w-conditioned student's w in its range); its "
                   "teacher's baselines then run at w = 1 and at these weights")
    p.add_argument("--guidance-interval", type=float_pair, metavar="LO,HI", help="guide only for t in [LO, HI] (w = 1 outside)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available, else CPU")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..runs import load
    from ..data import load_dataset
    from ..evaluation import against_training_free, baseline_weights, default_plan, evaluate_run, format_table, missing_training_free, protocol

    json_path = check_writable(args.json, "json", args.overwrite) if args.json else None
    model = load(args.run, device=args.device)
    samplers = args.sampler or [model.default_sampler]
    steps = args.steps or default_plan(model)[1]
    for spec in samplers:
        for s in steps:
            model.spec(spec, s)  # a bad spec or step count fails here, before any sampling
    guidance: list[float | None] = list(args.guidance) if args.guidance else [None]
    for w in guidance:
        model.guided(w, args.guidance_interval)
    if args.teacher is not None and not model.is_student:
        raise UserError(f"{args.run} is a diffusion teacher; --teacher names a student's teacher", arg="teacher")
    try:
        dataset = load_dataset(model.config.data, model.config.data_loader)
    except UserError as exc:
        raise UserError(f"the run's data {model.config.data!r} cannot be loaded for evaluation ({exc})", arg="run") from None
    teacher = None if args.no_baselines else open_teacher(model, args.teacher, args.device, dataset)
    fid = _fid_metric(args.fid_weights, dataset, model.device) if args.fid_weights is not None else None
    seeds = tuple(range(args.seeds))
    rows = evaluate_run(model, dataset, samplers, steps, n=args.count, seeds=seeds, extra=fid, guidance=guidance,
                        interval=args.guidance_interval)
    baselines: list[dict[str, Any]] = []
    if teacher is not None:
        baselines = missing_training_free(teacher, dataset, sorted({r["nfe"] for r in rows}), n=args.count, seeds=seeds,
                                          guidance=baseline_weights(teacher, rows))
        rows = against_training_free(rows, baselines)
    print(format_table(rows, title=f"{args.run} ({dataset.name}, step {model.step})"))
    if baselines:
        print()
        print(format_table(baselines, title=f"{teacher.workdir}: training-free samplers (the teacher, step {teacher.step})"))
    if json_path is not None:
        info = protocol(model, dataset, rows, fid=fid.describe() if fid is not None else None)
        if teacher is not None:
            info["baselines_teacher"] = str(teacher.workdir)
        save_json(json_path, {"protocol": info, "rows": rows, "baselines": baselines})


def teacher_folder(student: Run) -> Path | None:
    """The teacher folder a student's checkpoint names (a run folder, or a diffusers folder after
    ``diffusers:``), found from here or from a folder above the student's (the path is relative to where the
    student was trained); None if it names none or is gone."""
    named = student.card.teacher or ""
    if named in NOT_A_FOLDER:
        return None
    from ..runs.diffusers_teacher import SOURCE
    from ..runs.teachers import split_source

    source, arg = split_source(named)
    marker = "unet" if source == SOURCE else "config.json"
    path = Path(arg)
    candidates = [path] if path.is_absolute() else [path, *(a / path for a in Path(student.workdir).resolve().parents)]
    return next((c for c in candidates if (c / marker).exists()), None)


def open_teacher(student: Run, override: Path | None, device: str, dataset: Dataset) -> Run | None:
    """A student's teacher for its training-free baselines (None for a teacher run): ``override`` (errors
    name --teacher), else the folder its checkpoint names, skipped with a note when that cannot be opened."""
    from ..runs import Run
    from ..runs.diffusers_teacher import SOURCE, teacher_run
    from ..runs.teachers import split_source

    if not student.is_student:
        return None
    if override is not None:
        source, arg = split_source(str(override))
        if source == SOURCE:
            return teacher_run(arg, student, dataset)
        teacher = Run(override, device, arg="teacher")
        problem = _mismatch(teacher, student)
        if problem:
            raise UserError(problem, arg="teacher")
        return teacher
    folder = teacher_folder(student)
    if folder is None:
        named = student.card.teacher
        problem = f"its teacher {named!r} is not a run folder found from here" if named else "it was trained without a teacher"
    else:
        try:
            if split_source(student.card.teacher or "")[0] == SOURCE:
                return teacher_run(folder, student, dataset)
            found = Run(folder, device, arg="teacher")
        except UserError as exc:
            problem = f"its teacher {folder}: {exc.detail}"
        else:
            problem = _mismatch(found, student)
            if not problem:
                return found
    print(f"fewstep: note: {student.workdir}: no training-free baselines ({problem}; pass --teacher DIR)", file=sys.stderr)
    return None


def _mismatch(teacher: Run, student: Run) -> str:
    """Why ``teacher`` cannot stand for ``student``'s teacher ("" if it can)."""
    if teacher.is_student:
        return f"{teacher.workdir} is a {teacher.config.objective} student; expected a diffusion teacher"
    if teacher.shape != student.shape:
        return f"{teacher.workdir} samples shape {list(teacher.shape)}, the student {list(student.shape)}"
    return ""


def _fid_metric(path: Path, dataset: Dataset, device: torch.device) -> InceptionFID:
    """The Inception FID metric, checked on the held-out split before any sampling."""
    from ..metrics.inception import InceptionFID

    if dataset.kind != "images":
        raise UserError(f"--fid-weights: Inception FID is for images; this run's data {dataset.name!r} are points")
    fid = InceptionFID.load(path, device=device)
    fid.heldout_features(dataset)  # a wrong network fails here, not after minutes of sampling
    return fid
