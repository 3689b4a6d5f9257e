"""``fewstep evaluate``: quality against steps, with noise floors and seed spread."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..io import check_writable, save_json
from .args import bounded_int, count_int, int_list, str_list

if TYPE_CHECKING:
    import torch

    from ..data import Dataset
    from ..metrics.inception import InceptionFID


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="measure sample quality against steps", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="SWD (points) or FD-classifier (images) on the held-out split, mean ± std over 3 seeds, with the noise floor.")
    p.add_argument("--run", required=True, type=Path, help="run folder")
    p.add_argument("--sampler", type=str_list, help="comma list: ddim, addim, addim:data_free, addim:table:xhat, heun, ancestral, consistency (default: the run's own)")
    p.add_argument("--steps", type=int_list, help="comma list of step counts (default: 1,2,4,8,16,64 for a teacher, S for a multistep student, 1,2 for ECT)")
    p.add_argument("-n", dest="count", type=count_int, default=2000, help="samples per seed")
    p.add_argument("--seeds", type=bounded_int(1, 100), default=3, help="number of sampling seeds")
    p.add_argument("--json", type=Path, help="write the rows and the protocol as JSON")
    p.add_argument("--fid-weights", type=Path, help="TorchScript inception-2015-12-05.pt (stylegan2-ada / clean-fid): also report "
                   "standard Inception FID and its noise floor (images only; never downloaded)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available, else CPU")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..runs import load
    from ..data import load_dataset
    from ..evaluation import default_plan, evaluate_run, format_table, protocol

    json_path = check_writable(args.json, "json", args.overwrite) if args.json else None
    model = load(args.run, device=args.device)
    samplers = args.sampler or [model.default_sampler]
    steps = args.steps or default_plan(model)[1]
    for spec in samplers:
        for s in steps:
            model.spec(spec, s)  # a bad spec or step count fails here, before any sampling
    try:
        dataset = load_dataset(model.config.data, model.config.data_loader)
    except UserError as exc:
        raise UserError(f"the run's data {model.config.data!r} cannot be loaded for evaluation ({exc})", arg="run") from None
    fid = _fid_metric(args.fid_weights, dataset, model.device) if args.fid_weights is not None else None
    rows = evaluate_run(model, dataset, samplers, steps, n=args.count, seeds=tuple(range(args.seeds)), extra=fid)
    print(format_table(rows, title=f"{args.run} ({dataset.name}, step {model.step})"))
    if json_path is not None:
        info = protocol(model, dataset, rows, fid=fid.describe() if fid is not None else None)
        save_json(json_path, {"protocol": info, "rows": rows})


def _fid_metric(path: Path, dataset: Dataset, device: torch.device) -> InceptionFID:
    """The Inception FID metric, checked on the held-out split before any sampling."""
    from ..metrics.inception import InceptionFID

    if dataset.kind != "images":
        raise UserError(f"--fid-weights: Inception FID is for images; this run's data {dataset.name!r} are points")
    fid = InceptionFID.load(path, device=device)
    fid.heldout_features(dataset)  # a wrong network fails here, not after minutes of sampling
    return fid
