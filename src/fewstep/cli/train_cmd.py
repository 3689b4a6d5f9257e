"""``fewstep train``: fit a diffusion teacher (and, with --objective, a few-step student)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import TrainConfig, override, preset_for
from ..data import Dataset, load_dataset
from ..errors import UserError
from ..train.checkpoint import remove_run
from .args import non_negative_int, positive_float, positive_int, unit_float

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model", description="Train a diffusion teacher. Flags override the data set's preset.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", help="built-in name (moons, swissroll, checkerboard, gaussians8, digits, mnist) or a path to .npy/.npz or an image folder")
    p.add_argument("--out", required=True, type=Path, help="run folder to create")
    p.add_argument("--iters", type=positive_int, help="training iterations (preset: moons 8000, digits 4000)")
    p.add_argument("--batch", type=positive_int, help="batch size per process")
    p.add_argument("--lr", type=positive_float, help="peak AdamW learning rate")
    p.add_argument("--model", choices=("mlp", "unet"), help="backbone (preset: mlp for points, unet for images)")
    p.add_argument("--width", type=positive_int, help="backbone width (MLP units / UNet base channels)")
    p.add_argument("--dropout", type=unit_float, help="dropout rate")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the run in --out (it must exist)")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--precision", choices=PRECISIONS, help="bf16 autocasts the backbone only (preset: fp32 points, bf16 images)")
    p.add_argument("--eval-every", type=non_negative_int, help="quick evaluation every N iterations (0: at the end only)")
    p.add_argument("--ckpt-every", type=positive_int, help="checkpoint every N iterations")
    p.add_argument("--log-every", type=positive_int, help="log line every N iterations")
    p.add_argument("--eval-samples", type=positive_int, help="samples in each quick evaluation")
    p.add_argument("--stop-after", type=positive_int, help="stop (with a checkpoint) after N iterations of this call; continue with --resume")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def _check_out(args: argparse.Namespace) -> None:
    out: Path = args.out
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite: pass one of them, not both")
    if args.resume:
        if not (out / "checkpoint.json").is_file():
            raise UserError(f"--resume: {out} holds no fewstep run to continue")
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} is a file; expected a folder for the run")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"--out: {out} already exists and is not empty; pass --overwrite to replace the run or --resume to continue it")


def resolve_config(args: argparse.Namespace) -> tuple[TrainConfig, Dataset | None]:
    """The preset for --data with the given flags; on --resume the run's own config (only --iters may change)."""
    if args.resume:
        saved = TrainConfig.from_dict(json.loads((args.out / "config.json").read_text()))
        return override(saved, iters=args.iters), None
    if not args.data:
        raise UserError("--data: required (a built-in name or a path)")
    dataset = load_dataset(args.data)
    base = preset_for(args.data, dataset.kind)
    return override(
        base, iters=args.iters, batch=args.batch, lr=args.lr, seed=args.seed, device=args.device,
        precision=args.precision, eval_every=args.eval_every, ckpt_every=args.ckpt_every,
        log_every=args.log_every, eval_samples=args.eval_samples,
        model_name=args.model, model_width=args.width, model_dropout=args.dropout,
    ), dataset


def run(args: argparse.Namespace) -> None:
    from ..train.loop import train

    _check_out(args)
    config, dataset = resolve_config(args)
    if dataset is not None:
        # Build once before touching the folder, so a bad flag leaves an existing run as it was.
        from ..build import build_backbone

        build_backbone(config, dataset.shape)
        if args.overwrite and args.out.exists():
            remove_run(args.out)
    workdir = train(config, args.out, dataset=dataset, resume=args.resume, stop_after=args.stop_after, progress=not args.no_progress)
    print(f"run saved to {workdir}")
