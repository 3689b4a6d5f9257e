"""``fewstep sample``: draw samples from a run into .npz (data units) and a PNG."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..io import check_writable, save_npz, save_png
from ..samplers import SAMPLERS, format_sampler
from ..samplers.spec import text_choices
from .args import count_int, float_pair, non_negative_float, positive_int, seed_int, steps_int, str_list



def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="draw samples from a run", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Draw samples with the run's EMA weights. Teachers default to DDIM; students to their own consistency sampler.")
    p.add_argument("--run", required=True, type=Path, help="run folder")
    p.add_argument("--out", type=Path, help=".npz file for the samples (array 'samples', data units); this, --png or both")
    p.add_argument("--sampler", help=f"sampler: {', '.join(SAMPLERS)}; addim may add :table or :data_free, then :xhat (default: ddim for a teacher, consistency for a cd/ct/mect student, ect for an ect student)")
    p.add_argument("--steps", type=steps_int, help="sampling steps (default: 64 for a teacher, S for a cd/ct/mect student, 2 for an ect student)")
    p.add_argument("--variance", choices=tuple(text_choices("addim", "variance")), help="aDDIM's v_t: the run's measured table (docs/math.md §4 c; the default) or data-free 0.1/(2+SNR) (b)")
    p.add_argument("-n", dest="count", type=count_int, default=1000, help="number of samples")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the initial noise (and of ancestral noise)")
    p.add_argument("--batch-size", type=positive_int, help="samples per batch (memory stays flat in -n)")
    p.add_argument("--png", type=Path, help="PNG file: an image grid, or a scatter plot for 2D points")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available, else CPU")
    p.add_argument("--class", dest="classes", type=str_list, help="a class-conditional run: comma list of classes (indices, "
                   "or the names of class sub-folders) sampled in turn (default: every class, balanced); the .npz holds their indices as 'labels'")
    p.add_argument("--prompt", help="a caption-conditioned run: the prompt of every sample (\"\": the unconditional model; "
                   "prompts beyond 256 tokens are cut there with a warning)")
    p.add_argument("--prompts", type=Path, metavar="FILE", help="a text file of prompts, one per line (blank lines skipped), "
                   "sampled in turn; the .npz holds each sample's prompt as 'prompts'")
    p.add_argument("--guidance", type=non_negative_float, help="classifier-free guidance weight w (1: the conditional model, "
                   "0: the unconditional one; each step then costs 2 network calls); a w-conditioned student: its w, 1 call per step")
    p.add_argument("--guidance-interval", type=float_pair, metavar="LO,HI", help="guide only for t in [LO, HI] (w = 1 outside: "
                   "1 call per step there)")
    p.add_argument("--clip-x", action="store_true", help="clip x̂ to [-1, 1] (images only)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..runs import load

    if args.out is None and args.png is None:
        raise UserError("--out: give --out FILE.npz, --png FILE.png or both")
    if args.out is not None and args.out.suffix != ".npz":
        raise UserError(f"--out: expected a path ending in .npz, got {args.out}")
    if args.prompt is not None and args.prompts is not None:
        raise UserError("--prompts: give --prompt or --prompts, not both")
    prompts = read_prompts(args.prompts) if args.prompts is not None else args.prompt
    out = check_writable(args.out, "out", args.overwrite) if args.out else None
    png = check_writable(args.png, "png", args.overwrite) if args.png else None
    model = load(args.run, device=args.device)
    if args.clip_x and model.normaliser.kind != "images":
        raise UserError("--clip-x: only for images; this run's data are points")
    if prompts is not None and args.classes:
        raise UserError("--class: a run is conditioned on classes or on prompts; give one of --class, --prompt")
    spec = model.spec(args.sampler, args.steps, variance=args.variance)
    cond = model.prompt_cond(args.count, prompts) if prompts is not None else model.class_cond(args.count, args.classes)
    model.guided(args.guidance, args.guidance_interval)  # a bad weight or an unconditional run fails here, before sampling
    samples = model.sample(args.count, sampler=spec, seed=args.seed, batch_size=args.batch_size, clip_x=args.clip_x,
                           cond=cond, guidance=args.guidance, interval=args.guidance_interval)
    nfe = model.nfe(spec, guidance=args.guidance, interval=args.guidance_interval)
    sampler, steps = format_sampler(spec), spec.steps
    labels = {"labels": cond["class"].numpy()} if cond is not None and "class" in cond else {}
    if prompts is not None:
        given = [prompts] if isinstance(prompts, str) else prompts
        labels = {"prompts": np.array([given[i % len(given)] for i in range(args.count)], dtype=str)}
    guidance = {} if args.guidance is None else {"guidance": np.array(args.guidance)}
    if out is not None:
        save_npz(out, samples=samples, sampler=np.array(sampler), steps=np.array(steps), nfe=np.array(nfe), seed=np.array(args.seed),
                 **labels, **guidance)
    if png is not None:
        save_png(png, samples, model.normaliser.kind, title=f"{sampler}, {steps} steps")
    written = " and ".join(str(p) for p in (out, png) if p is not None)
    print(f"{len(samples)} samples ({sampler}, {steps} steps) written to {written}; {nfe} network calls per sample")


def read_prompts(path: Path) -> list[str]:
    """The prompts of a text file, one per line, blank lines skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--prompts: cannot read {path} as UTF-8 text ({type(exc).__name__})") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise UserError(f"--prompts: {path} holds no prompts (one per line)")
    return prompts
