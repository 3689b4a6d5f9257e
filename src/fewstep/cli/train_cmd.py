"""``fewstep train``: fit a diffusion teacher (and, with --objective, a few-step student)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..runs.config import PRESETS, TrainConfig, override, preset_for, student_config
from ..data import BUILTINS, LOADERS, Dataset, load_dataset
from ..errors import UserError
from ..io import check_folder_path
from ..runs.objective import OBJECTIVES
from ..runs.teachers import split_source, student_settings
from ..train.checkpoint import RUN_FILES, remove_run
from ..train.dist import is_main
from .args import (at_least_one_float, bounded_int, count_int, finite_float, float_pair, non_negative_float, non_negative_int, positive_float,
                   positive_int, seed_int, steps_int, unit_float)

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
# TrainConfig fields set by the student flags of the same name (--student-steps → student_steps)
STUDENT_FIELDS = ("teacher_null_class", "teacher_clip", "student_steps", "guidance", "guidance_range", "guidance_interval", "teacher_sampler", "n0", "n1", "anneal_frac", "eta", "huber_c", "weighting", "ect_p_mean",
                  "ect_p_std", "ect_q", "ect_k", "ect_b", "ect_stages", "ect_u_mid", "ect_weighting")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a teacher (or, with --objective, a few-step student)", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Train a diffusion teacher, or a few-step student from it (--objective cd|ct|ect|mect --teacher RUN). Flags override the data set's preset (a student's: its teacher's settings).")
    _add_common(p, objective_flag=True)
    d = sub.add_parser("distill", help="a few-step student of a teacher run, by the default recipe", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="A multistep consistency student of a teacher run: fewstep distill --teacher RUN --out DIR --student-steps S. "
                                   "--objective auto (the default recipe) distils (cd) a teacher whose 64-step DDIM samples score within 2.5x of their noise floor and otherwise "
                                   "trains (ct) from the teacher's weights, which beats distilling a teacher far from its data (docs/math.md §11).")
    _add_common(d, objective_flag=False)
    d.add_argument("--objective", choices=("auto", "cd", "ct", "mect"), default="auto",
                   help="auto: cd or ct by the teacher's distance from its noise floor")


def _add_common(p: argparse.ArgumentParser, objective_flag: bool) -> None:
    p.add_argument("--data", help="built-in name (moons, swissroll, checkerboard, gaussians8, digits, mnist) or a path to .npy/.npz or an image folder")
    p.add_argument("--out", required=True, type=Path, help="run folder to create")
    p.add_argument("--iters", type=positive_int, help=f"training iterations (preset: moons {PRESETS['points'].iters}, digits {PRESETS['digits'].iters}, mnist {PRESETS['mnist'].iters}; a student: a quarter of its teacher's)")
    p.add_argument("--batch", type=positive_int, help="batch size per process")
    p.add_argument("--lr", type=positive_float, help="peak AdamW learning rate")
    p.add_argument("--model", choices=("mlp", "unet", "diffusers-unet"), help="backbone (preset: mlp for points, unet for images); "
                   "diffusers-unet: a diffusers UNet2DModel that `fewstep export` writes for stock diffusers, trained on "
                   "squaredcos_cap_v2 betas at T = 1024 (the default for a diffusers:PATH teacher's student: the teacher's own UNet)")
    p.add_argument("--width", type=positive_int, help="backbone width (MLP units / UNet base channels)")
    p.add_argument("--dropout", type=unit_float, help="dropout rate")
    p.add_argument("--cond", choices=("auto", "none", "class", "text"), help="class: a class-conditional teacher on the data's "
                   "labels (the null class is K); text: conditioned on the data's captions through a frozen text encoder (the "
                   "null caption is \"\"); none: unconditional; auto (default): text for captioned data (digits-text, "
                   "mnist-text, a folder with metadata.jsonl, an .npz with captions), else class for labelled data "
                   "(digits, mnist, gaussians8, an .npz with labels, class sub-folders)")
    p.add_argument("--text-encoder", help="--cond text: the frozen text encoder: minilm (all-MiniLM-L6-v2, the default), "
                   "tiny:TOKENIZER_JSON (a small random one, for tests) or package.module:Factory")
    p.add_argument("--cond-dropout", type=unit_float, help="while training a conditional teacher, replace an example's "
                   "label by the null class with this probability (default 0.2, by ablation)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of weights, data order and noise (offset per rank under torchrun)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (it must exist)")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA if available, else CPU")
    p.add_argument("--precision", choices=PRECISIONS, help="bf16 autocasts the backbone only (every preset: fp32; bf16 pays off on GPUs and CPUs with bf16 units)")
    p.add_argument("--eval-every", type=non_negative_int, help="quick evaluation every N iterations (0: at the end only)")
    p.add_argument("--ckpt-every", type=positive_int, help="checkpoint every N iterations")
    p.add_argument("--log-every", type=positive_int, help="log line every N iterations")
    p.add_argument("--eval-samples", type=count_int, help="samples in each quick evaluation")
    p.add_argument("--data-loader", choices=LOADERS, help="memory: read all data; stream: memory-map a .npy or decode an image "
                   "folder batch by batch (data larger than memory); auto (preset): stream above 1 GiB")
    p.add_argument("--workers", type=bounded_int(0, 64), help="DataLoader processes decoding streamed data (preset: 2)")
    p.add_argument("--skip-nonfinite", dest="max_bad_steps", type=non_negative_int,
                   help="skip up to K steps whose loss or gradient is NaN/inf (default 0: stop at the first, keeping the last checkpoint)")
    p.add_argument("--stop-after", type=positive_int, help="stop (with a checkpoint) after N iterations of this call; continue with --resume")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_student_flags(p, objective_flag)
    p.set_defaults(func=run)


def add_student_flags(p: argparse.ArgumentParser, objective_flag: bool = True) -> None:
    """Flags of the few-step students: multistep consistency (docs/math.md §5) and ECT (docs/math.md §7); defaults shown."""
    d = TrainConfig()
    g = p.add_argument_group("multistep consistency (--objective cd|ct|mect)")
    if objective_flag:
        g.add_argument("--objective", choices=OBJECTIVES.names(), default="diffusion",
                       help="diffusion teacher; multistep consistency distillation (cd) or training (ct); Easy Consistency Tuning (ect, 1-2 step sampling) or multistep ECT (mect)")
    g.add_argument("--teacher", help="teacher run folder (cd; ct, ect, mect start from it unless --init none); 'ideal' for gaussians8's exact denoiser; "
                   "diffusers:PATH for a local diffusers folder (save_pretrained: a UNet2DModel with a DDPM or DDIM scheduler; the student "
                   "is by default the teacher's own UNet, from its weights, on its schedule)")
    g.add_argument("--teacher-null-class", type=non_negative_int, help="a class-conditional diffusers teacher's null class "
                   "(default: K when its UNet has K + 1 class embeddings for the data's K classes; with K there is none, and no guidance)")
    g.add_argument("--teacher-clip", action=argparse.BooleanOptionalAction, default=None,
                   help="cd: clip the teacher's x̂ to [-1, 1] (images; default: for an epsilon-prediction teacher, whose x̂ = (z - σ ε̂)/α "
                   "amplifies ε̂'s error 1/α-fold near t = 1)")
    g.add_argument("--student-steps", type=steps_int, default=d.student_steps, help="S: student sampling steps (segments) of cd, ct, mect")
    g.add_argument("--init", choices=("teacher", "none"), default=None, help="start from the teacher's weights, or from scratch (default: teacher when there is a teacher run, or a "
                   "diffusers teacher's own UNet)")
    g.add_argument("--guidance", type=non_negative_float, default=d.guidance, help="cd: distil the teacher guided at this "
                   "weight w (a class-conditional teacher; the student samples with S calls and no guidance)")
    g.add_argument("--guidance-range", type=float_pair, metavar="LO,HI", help="cd: a w-conditioned student, the teacher "
                   "guided at each example's w ~ U[LO, HI]; it samples any w in the range (--guidance) with S calls")
    g.add_argument("--guidance-interval", type=float_pair, metavar="LO,HI", help="cd with --guidance or --guidance-range: "
                   "the teacher guided only for t in [LO, HI], w = 1 outside (Kynkäänniemi et al. 2024)")
    g.add_argument("--teacher-sampler", choices=("addim", "ddim", "dpm2"), default=d.teacher_sampler, help="the teacher's small ODE step (cd)")
    g.add_argument("--n0", type=positive_int, default=d.n0, help="N_0: teacher discretisation at the start")
    g.add_argument("--n1", type=positive_int, default=d.n1, help="N_1: teacher discretisation after annealing")
    g.add_argument("--anneal-frac", type=unit_float, default=d.anneal_frac, help="fraction of the run over which N anneals log-linearly N_0 -> N_1")
    g.add_argument("--eta", type=positive_float, default=d.eta, help="aDDIM variance fraction η (teacher step, variance table)")
    g.add_argument("--huber-c", type=positive_float, default=d.huber_c, help="c of the pseudo-Huber loss (mean over dimensions)")
    g.add_argument("--weighting", choices=("vspace", "snr1"), default=d.weighting, help="loss weighting: error in v-space, or (SNR+1)·ρ")
    e = p.add_argument_group("Easy Consistency Tuning (--objective ect|mect; values for data of std 0.5, rescaled by σ_d/0.5)")
    e.add_argument("--ect-p-mean", type=finite_float, default=d.ect_p_mean, help="P_mean of u = σ/α ~ LogNormal (ect), shifted by ln(σ_d/0.5)")
    e.add_argument("--ect-p-std", type=positive_float, default=d.ect_p_std, help="P_std of u ~ LogNormal (ect)")
    e.add_argument("--ect-q", type=at_least_one_float, default=d.ect_q, help="q: r = max(0, u·(1 − q^-(stage+1)·g(u))); 4 for large data")
    e.add_argument("--ect-k", type=non_negative_float, default=d.ect_k, help="k: g(u) = 1 + k·sigmoid(−b·u)")
    e.add_argument("--ect-b", type=non_negative_float, default=d.ect_b, help="b: g(u) = 1 + k·sigmoid(−b·u)")
    e.add_argument("--ect-stages", type=positive_int, default=d.ect_stages, help="curriculum stages: iters_per_stage = iters / stages")
    e.add_argument("--ect-u-mid", type=positive_float, default=d.ect_u_mid, help="u_mid of the 2-step sampler (ect; 1.526 on ImageNet64), scaled by σ_d/0.5")
    e.add_argument("--ect-weighting", choices=("ect", "inv_gap"), default=d.ect_weighting, help="ect loss weight: 1/u² + 1/σ_d², or 1/(u − r)")
    e.add_argument("--ect-c", type=non_negative_float, default=d.ect_c, help="pseudo-Huber c of ect (None: 0.06/√d with --ect-weighting ect, 0 with inv_gap); mect uses --huber-c")


def _check_out(args: argparse.Namespace) -> None:
    out: Path = args.out
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite: pass one of them, not both")
    if args.resume:
        if (out / "checkpoint.json").is_file():
            return
        leftovers = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
        if (out.exists() and not out.is_dir()) or any(name not in RUN_FILES for name in leftovers):
            raise UserError(f"--resume: {out} holds no fewstep run to continue")
        if not (args.data or args.teacher):
            raise UserError(f"--resume: {out} holds no fewstep run to continue (with --data and the run's flags it would start one)")
        # Killed before its first checkpoint (a re-queued cluster job, say): start again from step 0.
        args.resume, args.overwrite, args.restarted = False, bool(leftovers), True
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} is a file; expected a folder for the run")
    check_folder_path(out, "out")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"--out: {out} already exists and is not empty; pass --overwrite to replace the run or --resume to continue it")


def _student_base(args: argparse.Namespace) -> TrainConfig:
    """A student inherits its teacher's settings (see :func:`fewstep.runs.config.student_config`)."""
    from ..runs.folder import read_run

    teacher = read_run(args.teacher, arg="teacher")[0]
    if args.objective == "auto" and (args.guidance is not None or args.guidance_range is not None):
        args.objective = "cd"  # a guided teacher is distilled; CT has no teacher estimate to guide
    if args.objective == "auto":
        from ..runs import load
        from ..runs.teachers import default_objective

        run = load(args.teacher, device=args.device or "auto")
        data = load_dataset(run.config.data, run.config.data_loader)
        args.objective, why = default_objective(run, data, n=min(teacher.eval_samples, 2000))
        if is_main():
            print(f"[distill] objective {args.objective}: {why}", file=sys.stderr)
    return student_config(teacher, args.teacher, args.objective, init=args.init or "teacher", data=args.data or teacher.data)


def resolve_config(args: argparse.Namespace) -> tuple[TrainConfig, Dataset | None]:
    """The preset for --data (or the teacher's config, for a student) with the given flags; on
    --resume the run's own config (only --iters may change)."""
    if args.resume:
        from ..runs.folder import read_run

        return override(read_run(args.out, arg="resume")[0], iters=args.iters), None
    student = args.objective != "diffusion"
    dataset = None
    if student and args.teacher and split_source(args.teacher)[0] is None:  # a teacher run folder
        base = _student_base(args)
    else:
        if not args.data:
            raise UserError("--data: required (a built-in name or a path)")
        if args.data not in BUILTINS and Path(args.data).exists():
            args.data = str(Path(args.data).resolve())  # the run must find its data from any folder
        dataset = load_dataset(args.data, args.data_loader or "auto")  # loaded once: mnist takes seconds
        base = preset_for(args.data, dataset.kind, dataset.shape)
        if student:
            if args.objective == "auto":  # no teacher run to score and no weights to start CT from: distil
                args.objective = "cd"
            if split_source(args.teacher or "")[0] == "diffusers":  # by default the teacher's own UNet, from its weights
                _check_own_unet(args)
                args.model = args.model or "diffusers-unet"
            init = args.init or ("teacher" if args.model == "diffusers-unet" else "none")
            if init == "teacher":  # from a diffusers teacher's weights: the recipe of a run-folder teacher's student
                base = student_config(base, args.teacher or "", args.objective, init=init)  # (a quarter of the iterations at lr / 5)
            else:
                base = dataclasses.replace(base, objective=args.objective, teacher=args.teacher or "", init=init, ema_halflife_frac=0.1)
    dataset = dataset or load_dataset(base.data, args.data_loader or base.data_loader)
    if student:
        base = override(base, **{name: getattr(args, name) for name in STUDENT_FIELDS})
        base = dataclasses.replace(base, ect_c=args.ect_c)  # None is a value here: the weighting's default c
    config = override(
        base, iters=args.iters, batch=args.batch, lr=args.lr, seed=args.seed, device=args.device,
        precision=args.precision, eval_every=args.eval_every, ckpt_every=args.ckpt_every,
        log_every=args.log_every, eval_samples=args.eval_samples, max_bad_steps=args.max_bad_steps,
        data_loader=args.data_loader, workers=args.workers, cond=args.cond, cond_dropout=args.cond_dropout,
        text_encoder=args.text_encoder,
        model_name=args.model, model_width=args.width, model_dropout=args.dropout,
    )
    if not student and config.model.name == "diffusers-unet":
        from ..runs.diffusers_unet import table

        config = dataclasses.replace(config, schedule=table())  # UNet2DModel's time is a table index (math.md §12)
    return (student_settings(config, dataset) if student else config), dataset


def _check_own_unet(args: argparse.Namespace) -> None:
    """A diffusers teacher's student as its own UNet takes the teacher's config, which no flag may change."""
    if args.model in (None, "diffusers-unet"):
        given = [flag for flag, value in (("--width", args.width), ("--dropout", args.dropout)) if value is not None]
        if given:
            raise UserError(f"{given[0]}: the student is the diffusers teacher's own UNet, with the teacher's config; "
                            "pass --model unet or mlp for another backbone")


def run(args: argparse.Namespace) -> None:
    from ..runs import train

    if args.objective in ("cd", "auto") and not args.teacher:
        raise UserError("--teacher: required for consistency distillation (a teacher run folder)")
    _check_out(args)
    config, dataset = resolve_config(args)
    if dataset is not None:
        # Build once before touching the folder, so a bad flag leaves an existing run as it was.
        from ..runs.build import build_backbone

        build_backbone(config, dataset.shape, dataset.num_classes)
        if args.overwrite and args.out.exists():
            remove_run(args.out)
    if getattr(args, "restarted", False):
        print(f"[train] {args.out} has no checkpoint yet: starting from step 0", file=sys.stderr)
    workdir = train(config, args.out, dataset=dataset, resume=args.resume, stop_after=args.stop_after, progress=not args.no_progress)
    if is_main():
        print(f"run saved to {workdir}")
